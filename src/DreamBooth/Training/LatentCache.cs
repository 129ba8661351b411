using System.Security.Cryptography;
using DreamBooth.Models.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>
/// VAE latent distributions (mean, std) of every training image, per bucket and flip variant, encoded
/// once and kept in memory and on disk (<c>{dir}/{image hash}_{W}x{H}_{flip}_{norm}_{vae hash}.latent</c>),
/// so later runs with the same images, buckets and VAE skip the encoder. A fresh latent is sampled from
/// the cached distribution at every step (mean + std·ε), as when encoding on the fly.
/// </summary>
public sealed class LatentCache : IDisposable
{
    readonly string _dir;
    readonly AutoencoderKL _vae;
    readonly Device _device;
    readonly Dictionary<string, (Tensor Mean, Tensor Std)> _memory = new();

    public string VaeHash { get; }
    /// <summary>Bytes of the latent distributions held in memory (on the training device).</summary>
    public long Bytes => _memory.Values.Sum(x => x.Mean.NumberOfElements * x.Mean.ElementSize + x.Std.NumberOfElements * x.Std.ElementSize);
    public int Encoded { get; private set; }
    public int LoadedFromDisk { get; private set; }

    public LatentCache(string dir, AutoencoderKL vae, Device device)
    {
        _dir = dir;
        _vae = vae;
        _device = device;
        VaeHash = HashModule(vae);
    }

    /// <summary>SHA-256 (first 12 hex) over every parameter's name and bytes.</summary>
    public static string HashModule(nn.Module module)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        foreach (var (name, p) in module.named_parameters())
        {
            sha.AppendData(System.Text.Encoding.UTF8.GetBytes(name));
            using var c = p.detach().cpu().contiguous();
            sha.AppendData(c.bytes);
        }
        return Convert.ToHexStringLower(sha.GetHashAndReset())[..12];
    }

    public static string Key(TrainingImage img, int width, int height, bool flip, bool dynamicNormalization, string vaeHash) =>
        $"{img.ContentHash}_{width}x{height}_{(flip ? 1 : 0)}_{(dynamicNormalization ? 1 : 0)}_{vaeHash}";

    /// <summary>Mean and std [4, h, w] (float32, on the training device); the cache owns them.</summary>
    public (Tensor Mean, Tensor Std) Get(TrainingImage img, int width, int height, bool flip, bool dynamicNormalization)
    {
        string key = Key(img, width, height, flip, dynamicNormalization, VaeHash);
        if (_memory.TryGetValue(key, out var hit)) return hit;
        string file = Path.Combine(_dir, key + ".latent");
        Tensor mean, std;
        if (File.Exists(file))
        {
            var d = TensorStateFile.Load(file);
            mean = d["mean"].to(_device).DetachFromDisposeScope();
            std = d["std"].to(_device).DetachFromDisposeScope();
            foreach (var t in d.Values) t.Dispose();
            LoadedFromDisk++;
        }
        else
        {
            (mean, std) = Encode(_vae, img.Path, width, height, flip, dynamicNormalization, _device);
            TensorStateFile.Save(file, new Dictionary<string, Tensor> { ["mean"] = mean, ["std"] = std });
            Encoded++;
        }
        _memory[key] = (mean, std);
        return (mean, std);
    }

    /// <summary>Encodes one image with the VAE (no grad): the latent distribution's mean and std, [4,h,w] float32.</summary>
    public static (Tensor Mean, Tensor Std) Encode(AutoencoderKL vae, string path, int width, int height, bool flip, bool dynamicNormalization, Device device)
    {
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var pixels = TrainingData.LoadPixels(path, width, height, flip, dynamicNormalization).unsqueeze(0);
        var vaeDtype = vae.parameters().First().dtype;
        using var dist = vae.Encode(pixels.to(vaeDtype, device));
        var mean = dist.Mean[0].to(ScalarType.Float32).clone();
        var std = dist.Std[0].to(ScalarType.Float32).clone();
        return (mean.DetachFromDisposeScope(), std.DetachFromDisposeScope());
    }

    public void Dispose()
    {
        foreach (var (m, s) in _memory.Values) { m.Dispose(); s.Dispose(); }
        _memory.Clear();
    }
}
