using System.Text.Json;
using DreamBooth.Likeness;
using DreamBooth.Models.FaceRecognition;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Tests.Likeness;

/// <summary>One face describer (BlazeFace + face-api's recognition net) shared by a test class.</summary>
public sealed class DescriberFixture : IDisposable
{
    public FaceDescriber Describer { get; } = FaceDescriber.Create();
    public void Dispose() => Describer.Dispose();
}

static class LikenessFixtures
{
    public static string Folder => Path.Combine(TestPaths.Fixtures, "likeness");
    public static string Crops => Path.Combine(Folder, "crops");

    /// <summary>tests/fixtures/likeness/reference-descriptors.json: face-api's descriptors (tfjs, wasm) of the fixture crops.</summary>
    public static IReadOnlyDictionary<string, float[]> ReferenceDescriptors()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "reference-descriptors.json")));
        return doc.RootElement.GetProperty("descriptors").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(v => v.GetSingle()).ToArray());
    }
}

/// <summary>Variants of the sample photos, made in memory: mirror, crops, rescales, rotation, JPEG re-encodes.</summary>
static class PhotoVariants
{
    public static Dictionary<string, Image<Rgb24>> Of(string photo)
    {
        using var img = Image.Load<Rgb24>(TestPaths.Photo(photo + ".png"));
        var v = new Dictionary<string, Image<Rgb24>>
        {
            [photo] = img.Clone(),
            [photo + "-mirror"] = img.Clone(c => c.Flip(FlipMode.Horizontal)),
            [photo + "-half"] = img.Clone(c => c.Resize(256, 256)),
            [photo + "-x2"] = img.Clone(c => c.Resize(1024, 1024)),
            [photo + "-crop"] = img.Clone(c => c.Crop(new Rectangle(100, 20, 300, 300))),
            [photo + "-rot10"] = img.Clone(c => c.Rotate(10)),
            [photo + "-jpeg40"] = Jpeg(img, 40),
            [photo + "-crop-mirror-jpeg70"] = Jpeg(img.Clone(c => c.Crop(new Rectangle(60, 0, 400, 460)).Flip(FlipMode.Horizontal)), 70),
        };
        return v;
    }

    public static Image<Rgb24> Jpeg(Image<Rgb24> image, int quality)
    {
        using var ms = new MemoryStream();
        image.SaveAsJpeg(ms, new JpegEncoder { Quality = quality });
        ms.Position = 0;
        return Image.Load<Rgb24>(ms);
    }

    public static void Dispose(IEnumerable<Image> images)
    {
        foreach (var i in images) i.Dispose();
    }
}
