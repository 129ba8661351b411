using DreamBooth.Data;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Data;

/// <summary>One detector (both ONNX sessions) shared by a test class.</summary>
public sealed class DetectorFixture : IDisposable
{
    public BlazeFaceDetector Detector { get; } = BlazeFaceDetector.Create();
    public void Dispose() => Detector.Dispose();
}

static class Photos
{
    public static string Dir => Path.Combine(TestPaths.DataSamples, "photos");
    public static string Path_(string name) => Path.Combine(Dir, name);
    public static Image<Rgb24> Load(string name) => Image.Load<Rgb24>(Path_(name));

    /// <summary>Where the faces are (found by running the detector once and checked by eye on the debug overlay).</summary>
    public static readonly RectangleF AstronautFace = new(173, 74, 102, 102);
    public static readonly RectangleF CameraFace = new(187, 126, 70, 70);
}
