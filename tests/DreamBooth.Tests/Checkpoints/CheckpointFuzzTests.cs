using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Checkpoints;

/// <summary>
/// Mutations of valid files (byte flips, truncations, extensions, overwritten length/offset fields): every case must
/// load or end in a DreamBoothException; any other exception (or a crash) is a defect. Bounded: a few seconds.
/// DREAMBOOTH_FUZZ_CASES raises the count for a soak run.
/// </summary>
public class CheckpointFuzzTests
{
    static int Cases => int.TryParse(Environment.GetEnvironmentVariable("DREAMBOOTH_FUZZ_CASES"), out var n) ? n : 1500;

    static byte[] Mutate(byte[] valid, Random rng, int headerBytes)
    {
        var b = (byte[])valid.Clone();
        switch (rng.Next(6))
        {
            case 0: // flip bytes, mostly in the header/metadata part
                for (int i = rng.Next(1, 4); i > 0; i--) b[rng.Next(Math.Min(b.Length, headerBytes))] ^= (byte)(1 << rng.Next(8));
                return b;
            case 1: return b[..rng.Next(b.Length)];                               // truncate
            case 2: return [.. b, .. new byte[rng.Next(1, 64)]];                  // trailing garbage
            case 3: // random byte anywhere
                b[rng.Next(b.Length)] = (byte)rng.Next(256);
                return b;
            case 4: // overwrite 8 bytes with an extreme value (lengths, offsets, sizes)
            {
                int at = rng.Next(Math.Max(1, b.Length - 8));
                long v = rng.Next(4) switch { 0 => long.MaxValue, 1 => -1, 2 => rng.NextInt64(), _ => b.Length * 2L };
                BitConverter.GetBytes(v).CopyTo(b, at);
                return b;
            }
            default: // replace an ASCII digit (shapes, offsets in JSON; sizes in pickles)
            {
                var digits = Enumerable.Range(0, Math.Min(b.Length, headerBytes)).Where(i => b[i] is >= (byte)'0' and <= (byte)'9').ToList();
                if (digits.Count > 0) b[digits[rng.Next(digits.Count)]] = (byte)"0123456789-.eE"[rng.Next(14)];
                return b;
            }
        }
    }

    static void Run(byte[] valid, string ext, int headerBytes, int seed)
    {
        using var dir = TestPaths.NewTempDir("fuzz");
        var rng = new Random(seed);
        int loaded = 0, refused = 0;
        for (int i = 0; i < Cases; i++)
        {
            var path = dir.File($"case{i % 8}{ext}");
            File.WriteAllBytes(path, Mutate(valid, rng, headerBytes));
            try
            {
                using var f = TensorFile.Open(path);
                foreach (var k in f.Keys.ToList()) f.Load(k).Dispose();
                loaded++;
            }
            catch (DreamBoothException e)
            {
                Assert.DoesNotContain('\n', e.Message);
                refused++;
            }
        }
        Assert.Equal(Cases, loaded + refused);
        Assert.True(refused > Cases / 4, $"only {refused} of {Cases} mutations refused");
    }

    [Fact]
    public void Safetensors_mutations_end_in_clean_errors()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("valid.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor>
        {
            ["a"] = ones(3, 2), ["b"] = zeros([4], ScalarType.Float16), ["c"] = arange(5, dtype: ScalarType.Int64),
        }, new Dictionary<string, string> { ["k"] = "v" });
        var bytes = File.ReadAllBytes(path);
        Run(bytes, ".safetensors", headerBytes: (int)BitConverter.ToInt64(bytes) + 8, seed: 11);
    }

    [Fact]
    public void Ckpt_mutations_end_in_clean_errors()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("valid.ckpt");
        TorchCheckpointWriter.WriteStateDict(path, [("a", ones(3, 2)), ("b", zeros([4], ScalarType.Float16)), ("c", arange(5, dtype: ScalarType.Int64))]);
        var bytes = File.ReadAllBytes(path);
        Run(bytes, ".ckpt", headerBytes: bytes.Length, seed: 12);
    }
}
