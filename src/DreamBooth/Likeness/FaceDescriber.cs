using DreamBooth.Data;
using DreamBooth.Models.FaceRecognition;
using DreamBooth.Runtime;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace DreamBooth.Likeness;

/// <summary>A detected face and its 128-d identity descriptor.</summary>
public sealed record DescribedFace(FaceBox Box, float[] Descriptor, PointF[] CropCorners);

/// <summary>Every face found in one image, largest first, and how many more were too small to describe.</summary>
public sealed record ImageFaces(int Width, int Height, IReadOnlyList<DescribedFace> Faces, int TooSmall = 0)
{
    /// <summary>
    /// The subject's face, or null: the most confident face among those at least a quarter the area of the largest.
    /// (Largest alone is fooled by a big false positive: the detector before the small-face changes of issue 14 found a
    /// 0.73 "face" on the camera of a 10°-rotated camera.png, larger than the man's 0.93 one.)
    /// </summary>
    public DescribedFace? Main => Faces.Count == 0 ? null
        : Faces.Where(f => f.Box.Area >= 0.25f * Faces[0].Box.Area).MaxBy(f => f.Box.Score);
}

/// <summary>
/// Detect → align → describe: BlazeFace finds the faces (<see cref="BlazeFaceDetector"/>'s public API), each is aligned
/// from its eye and mouth keypoints (<see cref="FaceAligner"/>) and described by face-api's recognition net
/// (<see cref="FaceRecognitionNet"/>, CPU, float32). Descriptors of the same person are closer than
/// <see cref="FaceDistance.Threshold"/> (0.6) in Euclidean distance. Not thread-safe (one net, one torch thread pool).
/// </summary>
public sealed class FaceDescriber : IDisposable
{
    public const string ManifestAsset = "face-api/face_recognition_model-weights_manifest.json";
    /// <summary>SHA-256 of face_recognition_model.bin (npm @vladmandic/face-api@1.7.15).</summary>
    public const string WeightsSha256 = "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589";
    /// <summary>SHA-256 of face_recognition_model-weights_manifest.json (same package).</summary>
    public const string ManifestSha256 = "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b";

    readonly BlazeFaceDetector _detector;
    readonly bool _ownsDetector;
    readonly FaceRecognitionNet _net;
    public FaceAlignOptions Align { get; }

    /// <summary>
    /// Faces whose box is narrower than this (pixels) are not described: the net sees a 150×150 crop, and below
    /// ~32 px the crop is mostly interpolation (the descriptor of camera.png at half size, a 35 px face, is still 0.27
    /// from the full-size one; BlazeFace also "finds" faces in 16×16 noise, which this keeps out).
    /// </summary>
    public const float MinFaceSize = 32;

    FaceDescriber(BlazeFaceDetector detector, bool ownsDetector, FaceRecognitionNet net, FaceAlignOptions align)
    {
        _detector = detector;
        _ownsDetector = ownsDetector;
        _net = net;
        Align = align;
    }

    /// <summary>The describer with the workbench assets (BlazeFace and face-api's weights, fetched by the build, SHA-256 verified here).</summary>
    public static FaceDescriber Create(BlazeFaceDetector? detector = null, FaceAlignOptions? align = null) =>
        Create(LoadNet(), detector, align);

    /// <summary>The describer around a loaded net (which it then owns).</summary>
    public static FaceDescriber Create(FaceRecognitionNet net, BlazeFaceDetector? detector = null, FaceAlignOptions? align = null)
    {
        try
        {
            return new FaceDescriber(detector ?? BlazeFaceDetector.Create(), detector is null, net, align ?? FaceAlignOptions.Default);
        }
        catch
        {
            net.Dispose();
            throw;
        }
    }

    /// <summary>The recognition net from the workbench assets, after checking both files' SHA-256.</summary>
    public static FaceRecognitionNet LoadNet()
    {
        var manifest = WorkbenchAssets.Find(ManifestAsset);
        Verify(manifest, ManifestSha256);
        Verify(Path.Combine(Path.GetDirectoryName(manifest)!, "face_recognition_model.bin"), WeightsSha256);
        return FaceRecognitionNet.FromManifest(manifest);
    }

    static void Verify(string path, string sha256)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"face-recognition weights not found: {path} (re-run build/fetch-assets.sh)");
        string actual;
        using (var fs = File.OpenRead(path)) actual = Convert.ToHexStringLower(System.Security.Cryptography.SHA256.HashData(fs));
        if (actual != sha256)
            throw new DreamBoothException($"face-recognition weights {path}: SHA-256 {actual} does not match the expected {sha256} (re-run build/fetch-assets.sh)");
    }

    /// <summary>All faces of an image with their descriptors, largest first.</summary>
    public ImageFaces Describe(Image<Rgb24> image, CancellationToken ct = default)
    {
        var all = _detector.Detect(image, ct).Faces;
        var found = all.Where(f => f.Width >= MinFaceSize).OrderByDescending(f => f.Area).ToList();
        int tooSmall = all.Count - found.Count;
        if (found.Count == 0) return new ImageFaces(image.Width, image.Height, [], tooSmall);
        var crops = new List<AlignedFace>(found.Count);
        try
        {
            foreach (var f in found) crops.Add(FaceAligner.Align(image, f, Align));
            var descriptors = DescribeCrops(crops.Select(c => c.Image).ToList());
            return new ImageFaces(image.Width, image.Height,
                found.Select((f, i) => new DescribedFace(f, descriptors[i], crops[i].Corners)).ToList(), tooSmall);
        }
        finally
        {
            foreach (var c in crops) c.Dispose();
        }
    }

    /// <summary>The descriptor of each 150×150 aligned crop (face-api's <c>computeFaceDescriptor</c> on a crop of its input size).</summary>
    public float[][] DescribeCrops(IReadOnlyList<Image<Rgb24>> crops) => DescribeCrops(_net, crops);

    public static float[][] DescribeCrops(FaceRecognitionNet net, IReadOnlyList<Image<Rgb24>> crops)
    {
        if (crops.Count == 0) return [];
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var input = ToInput(crops);
        var output = net.forward(input).contiguous();
        var flat = output.data<float>().ToArray();
        return Enumerable.Range(0, crops.Count).Select(i => flat.AsSpan(i * FaceRecognitionNet.DescriptorSize, FaceRecognitionNet.DescriptorSize).ToArray()).ToArray();
    }

    /// <summary>150×150 RGB crops → [B, 3, 150, 150] float32 in 0..255.</summary>
    public static Tensor ToInput(IReadOnlyList<Image<Rgb24>> crops)
    {
        int n = FaceRecognitionNet.InputSize;
        var values = new float[crops.Count * 3 * n * n];
        for (int b = 0; b < crops.Count; b++)
        {
            var crop = crops[b];
            if (crop.Width != n || crop.Height != n) throw new ArgumentException($"face crop {b} is {crop.Width}x{crop.Height}, expected {n}x{n}");
            int plane = n * n, offset = b * 3 * plane;
            crop.ProcessPixelRows(acc =>
            {
                for (int y = 0; y < n; y++)
                {
                    var row = acc.GetRowSpan(y);
                    for (int x = 0; x < n; x++)
                    {
                        int o = offset + y * n + x;
                        values[o] = row[x].R;
                        values[o + plane] = row[x].G;
                        values[o + 2 * plane] = row[x].B;
                    }
                }
            });
        }
        return tensor(values, [crops.Count, 3, n, n]);
    }

    public void Dispose()
    {
        _net.Dispose();
        if (_ownsDetector) _detector.Dispose();
    }
}

/// <summary>Distances between descriptors.</summary>
public static class FaceDistance
{
    /// <summary>dlib's and face-api's same-person threshold on the Euclidean distance of two descriptors.</summary>
    public const double Threshold = 0.6;

    /// <summary>The word that marks a prompt as asking for the subject: the first word of the instance prompt the class prompt lacks ("ohwx man" / "man" → "ohwx"; null if none).</summary>
    public static string? InstanceToken(string instancePrompt, string classPrompt)
    {
        var classWords = classPrompt.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries).ToHashSet(StringComparer.OrdinalIgnoreCase);
        return instancePrompt.Split([' ', ','], StringSplitOptions.RemoveEmptyEntries).FirstOrDefault(w => !classWords.Contains(w));
    }

    public static double Euclidean(float[] a, float[] b)
    {
        if (a.Length != b.Length) throw new ArgumentException($"descriptors of different lengths ({a.Length}, {b.Length})");
        double s = 0;
        for (int i = 0; i < a.Length; i++) { double d = a[i] - b[i]; s += d * d; }
        return Math.Sqrt(s);
    }
}
