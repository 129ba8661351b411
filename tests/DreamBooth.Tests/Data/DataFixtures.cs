using DreamBooth.Data;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

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

/// <summary>
/// Made-up 10–12 MP scenes built from the sample photos in the test (no big binaries committed): a background photo
/// upscaled to cover W×H, and a person (a sample photo or a crop of it) scaled so that its face has a given size and
/// pasted with the face centre at a given point.
/// </summary>
static class Composites
{
    public sealed record Person(string File, RectangleF Face, Rectangle Crop, bool Flip = false);

    public static readonly Person Astronaut = new("astronaut.png", Photos.AstronautFace, new Rectangle(0, 0, 512, 512));
    public static readonly Person AstronautUpper = new("astronaut.png", Photos.AstronautFace, new Rectangle(90, 20, 280, 400));
    public static readonly Person Camera = new("camera.png", Photos.CameraFace, new Rectangle(0, 0, 512, 512));
    public static readonly Person CameraUpper = new("camera.png", Photos.CameraFace, new Rectangle(120, 60, 240, 400));
    /// <summary>The cat of chelsea.png; its "face" is the box the back model puts on its head.</summary>
    public static readonly Person Cat = new("chelsea.png", new RectangleF(70, 37, 233, 233), new Rectangle(0, 0, 451, 300));

    public static Person Get(string name) => name switch
    {
        "astronaut" => Astronaut, "astronaut-upper" => AstronautUpper, "camera" => Camera, "camera-upper" => CameraUpper,
        "astronaut-flipped" => Astronaut with { Flip = true }, "camera-upper-flipped" => CameraUpper with { Flip = true }, "cat" => Cat,
        _ => throw new ArgumentException(name),
    };

    public static Image<Rgb24> Background(string photo, int width, int height)
    {
        var img = Photos.Load(photo);
        img.Mutate(c => c.Resize(new ResizeOptions { Size = new Size(width, height), Mode = ResizeMode.Crop, Sampler = KnownResamplers.Bicubic }));
        return img;
    }

    /// <summary>Pastes <paramref name="person"/> with its face <paramref name="facePx"/> wide, centred at (cx, cy); returns where the face is.</summary>
    public static RectangleF Paste(Image<Rgb24> scene, Person person, float facePx, float cx, float cy)
    {
        using var p = Photos.Load(person.File);
        var crop = person.Crop;
        float k = facePx / person.Face.Width;
        p.Mutate(c =>
        {
            c.Crop(crop).Resize((int)Math.Round(crop.Width * k), (int)Math.Round(crop.Height * k), KnownResamplers.Lanczos3);
            if (person.Flip) c.Flip(FlipMode.Horizontal);
        });
        float fx = (person.Face.X - crop.X) * k, fy = (person.Face.Y - crop.Y) * k, fw = person.Face.Width * k, fh = person.Face.Height * k;
        if (person.Flip) fx = p.Width - fx - fw;
        int ox = (int)Math.Round(cx - fx - fw / 2), oy = (int)Math.Round(cy - fy - fh / 2);
        scene.Mutate(c => c.DrawImage(p, new Point(ox, oy), 1f));
        return new RectangleF(ox + fx, oy + fy, fw, fh);
    }
}
