using DreamBooth.Checkpoints;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.FaceRecognition;

/// <summary>
/// face-api's <c>FaceRecognitionNet</c> (@vladmandic/face-api 1.7.15, MIT), itself a port of dlib's
/// <c>dlib_face_recognition_resnet_model_v1</c>: a ResNet-34-like net that maps an aligned 150×150 RGB face to a
/// 128-d descriptor whose Euclidean distance measures identity (dlib and face-api call 0.6 the same-person threshold).
/// <para>
/// Layout (field names are face-api's parameter names, so the weights manifest maps one to one): input minus the
/// RGB mean (122.782, 117.001, 104.298), divided by 255 → <c>conv32_down</c> (7×7, stride 2, valid) → 3×3 max
/// pool, stride 2 → 3 residual blocks at 32 channels → down + 3 at 64 → down + 2 at 128 → down + 2 at 256 →
/// <c>conv256_down_out</c> → global average → <c>fc</c> (256 → 128, no bias). Spatial sizes for a 150 input:
/// 72 → 35 → 17 → 8 → 3 (padded to the pooled 4) → 1 (padded to 2).
/// </para>
/// </summary>
public sealed class FaceRecognitionNet : nn.Module<Tensor, Tensor>
{
    /// <summary>The input side face-api resizes every face crop to.</summary>
    public const int InputSize = 150;
    public const int DescriptorSize = 128;
    /// <summary>face-api's mean RGB, subtracted before dividing by 255.</summary>
    public static readonly float[] MeanRgb = [122.782f, 117.001f, 104.298f];

    readonly ConvLayer conv32_down;
    readonly ResidualLayer conv32_1, conv32_2, conv32_3;
    readonly ResidualLayer conv64_down, conv64_1, conv64_2, conv64_3;
    readonly ResidualLayer conv128_down, conv128_1, conv128_2;
    readonly ResidualLayer conv256_down, conv256_1, conv256_2, conv256_down_out;
    readonly Parameter fc;

    public FaceRecognitionNet() : base(nameof(FaceRecognitionNet))
    {
        conv32_down = new ConvLayer(3, 32, 7, down: true);
        conv32_1 = new ResidualLayer(32, 32);
        conv32_2 = new ResidualLayer(32, 32);
        conv32_3 = new ResidualLayer(32, 32);
        conv64_down = new ResidualLayer(32, 64, down: true);
        conv64_1 = new ResidualLayer(64, 64);
        conv64_2 = new ResidualLayer(64, 64);
        conv64_3 = new ResidualLayer(64, 64);
        conv128_down = new ResidualLayer(64, 128, down: true);
        conv128_1 = new ResidualLayer(128, 128);
        conv128_2 = new ResidualLayer(128, 128);
        conv256_down = new ResidualLayer(128, 256, down: true);
        conv256_1 = new ResidualLayer(256, 256);
        conv256_2 = new ResidualLayer(256, 256);
        conv256_down_out = new ResidualLayer(256, 256, down: true);
        // face-api's layout [256, 128]: descriptor = pooled @ fc
        fc = nn.Parameter(zeros(256, DescriptorSize), requires_grad: false);
        RegisterComponents();
    }

    /// <param name="x">[B, 3, 150, 150] RGB in 0..255 (float).</param>
    /// <returns>[B, 128] descriptors.</returns>
    public override Tensor forward(Tensor x)
    {
        if (x.dim() != 4 || x.shape[1] != 3) throw new ArgumentException($"expected [B, 3, H, W] RGB, got [{string.Join(", ", x.shape)}]");
        using var scope = NewDisposeScope();
        var mean = tensor(MeanRgb, device: x.device).view(1, 3, 1, 1);
        var h = (x - mean) / 255f;
        h = conv32_down.forward(h);
        h = nn.functional.max_pool2d(h, 3, 2);
        h = conv32_3.forward(conv32_2.forward(conv32_1.forward(h)));
        h = conv64_3.forward(conv64_2.forward(conv64_1.forward(conv64_down.forward(h))));
        h = conv128_2.forward(conv128_1.forward(conv128_down.forward(h)));
        h = conv256_2.forward(conv256_1.forward(conv256_down.forward(h)));
        h = conv256_down_out.forward(h);
        var pooled = h.mean([2, 3]);
        return pooled.matmul(fc).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// The net with face-api's weights from a <c>face_recognition_model-weights_manifest.json</c> (and the .bin beside
    /// it). Strict: every manifest tensor is used, every parameter is set, shapes must match; the error names the
    /// tensor. The one layout change: conv <c>…/conv/filters</c> are TF [kh, kw, in, out] and become [out, in, kh, kw].
    /// </summary>
    public static FaceRecognitionNet FromManifest(string manifestPath)
    {
        var tensors = TfjsWeightsManifest.Load(manifestPath);
        var net = new FaceRecognitionNet();
        try
        {
            net.LoadFaceApiWeights(tensors, manifestPath);
            net.eval();
            return net;
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>The manifest name of one of our parameter names: "conv32_1.conv1.conv.weight" → "conv32_1/conv1/conv/filters".</summary>
    public static string ManifestName(string parameter)
    {
        var name = parameter.Replace('.', '/');
        return name.EndsWith("/conv/weight", StringComparison.Ordinal) ? name[..^"weight".Length] + "filters" : name;
    }

    internal void LoadFaceApiWeights(IReadOnlyDictionary<string, TfjsTensor> tensors, string source)
    {
        var parameters = named_parameters().ToList();
        var expected = parameters.Select(p => ManifestName(p.name)).ToHashSet(StringComparer.Ordinal);
        var unexpected = tensors.Keys.Where(k => !expected.Contains(k)).OrderBy(k => k, StringComparer.Ordinal).ToList();
        if (unexpected.Count > 0)
            throw new DreamBoothException($"{source}: tensor '{unexpected[0]}' is not part of the face-recognition net{(unexpected.Count > 1 ? $" (and {unexpected.Count - 1} more)" : "")}");
        using var _ = no_grad();
        foreach (var (name, parameter) in parameters)
        {
            var key = ManifestName(name);
            if (!tensors.TryGetValue(key, out var t))
                throw new DreamBoothException($"{source}: tensor '{key}' is missing (needed for {name} {Shape(parameter.shape)})");
            bool filters = key.EndsWith("/conv/filters", StringComparison.Ordinal);
            long[] expectedShape = filters ? [parameter.shape[2], parameter.shape[3], parameter.shape[1], parameter.shape[0]] : parameter.shape;
            if (!t.Shape.SequenceEqual(expectedShape))
                throw new DreamBoothException($"{source}: tensor '{key}' has shape {t.ShapeText}, expected {Shape(expectedShape)}");
            using var value = torch.tensor(t.Values, t.Shape);
            using var laid = filters ? value.permute(3, 2, 0, 1) : value.alias();
            parameter.copy_(laid);
        }
    }

    static string Shape(long[] shape) => "[" + string.Join(", ", shape) + "]";
}
