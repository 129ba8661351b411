using DreamBooth.Data;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Data;

/// <summary>
/// Issue 14.8: on 10–12 MP photos where the person is small (face 60–150 px), the face must be found and the 768×1024
/// focal crop must hold it; animal faces must stay out. The scenes are composites of the sample photos (Composites).
/// </summary>
public class SmallFaceTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    static bool Contains(Rectangle crop, RectangleF face) =>
        crop.Left <= face.Left && crop.Top <= face.Top && crop.Right >= face.Right && crop.Bottom >= face.Bottom;

    /// <summary>person, face width in px, background, scene size, face centre as fractions of the scene.</summary>
    public static TheoryData<string, int, string, int, int, float, float> People() => new()
    {
        { "astronaut", 60, "coffee.png", 4000, 3000, 0.12f, 0.15f },
        { "camera", 60, "rocket.jpg", 4000, 3000, 0.85f, 0.25f },
        { "astronaut-upper", 75, "chelsea.png", 4000, 3000, 0.30f, 0.72f },
        { "camera-upper-flipped", 90, "coffee.png", 4000, 3000, 0.90f, 0.85f },
        { "astronaut-flipped", 120, "rocket.jpg", 4000, 3000, 0.62f, 0.40f },
        { "camera", 150, "chelsea.png", 4000, 3000, 0.15f, 0.80f },
        { "camera-upper", 60, "coffee.png", 3000, 4000, 0.70f, 0.20f },
        { "astronaut-upper", 65, "rocket.jpg", 4608, 2592, 0.50f, 0.60f },
    };

    [Theory]
    [MemberData(nameof(People))]
    public void A_small_face_in_a_12_MP_photo_is_found_and_kept_by_the_focal_crop(string person, int facePx, string background, int w, int h, float cx, float cy)
    {
        using var scene = Composites.Background(background, w, h);
        var pasted = Composites.Paste(scene, Composites.Get(person), facePx, cx * w, cy * h);
        var result = fx.Detector.Detect(scene);
        var face = Assert.Single(result.Faces);
        Assert.True(BlazeFaceDetector.IoU(face.Rect, pasted) > 0.3f, $"face {face.Rect} ({face.Model} {face.Score:F2}) is not the pasted face {pasted}");
        var plan = FocalCrop.Plan(scene, result.Faces, 768, 1024, FocalCropOptions.Recipe);
        Assert.False(plan.Analysis.Fallback);
        Assert.True(Contains(plan.SourceRect, pasted), $"crop {plan.SourceRect} cuts the face {pasted}");
    }

    [Theory]
    [InlineData("coffee.png", 120, 0.35f, 0.40f)]
    [InlineData("rocket.jpg", 300, 0.30f, 0.45f)]
    [InlineData("rocket.jpg", 500, 0.35f, 0.40f)]
    [InlineData("coffee.png", 1000, 0.40f, 0.45f)]
    public void A_cat_pasted_into_a_12_MP_photo_is_not_a_face(string background, int headPx, float cx, float cy)
    {
        using var scene = Composites.Background(background, 4000, 3000);
        Composites.Paste(scene, Composites.Cat, headPx, cx * 4000, cy * 3000);
        var result = fx.Detector.Detect(scene);
        Assert.True(result.Faces.Count == 0, "faces: " + string.Join(", ", result.Faces.Select(f => $"{f.Rect} {f.Model} {f.Score:F2}")));
    }

    [Theory]
    [InlineData("chelsea.png", 4000, 3000)] // the cat fills more of a 4:3 frame than of the 3:2 original
    [InlineData("chelsea.png", 1024, 768)]
    [InlineData("coffee.png", 4000, 3000)]
    [InlineData("rocket.jpg", 4000, 3000)]
    [InlineData("rocket.jpg", 3000, 4000)]
    public void Photos_without_people_stay_face_free_at_12_MP(string photo, int w, int h)
    {
        using var scene = Composites.Background(photo, w, h);
        var result = fx.Detector.Detect(scene);
        Assert.True(result.Faces.Count == 0, "faces: " + string.Join(", ", result.Faces.Select(f => $"{f.Rect} {f.Model} {f.Score:F2}")));
    }

    /// <summary>The user's path: a 12 MP JPEG through prepare (decoded at DCT scale 1/2, so the 60 px face is 30 px there).</summary>
    [Fact]
    public async Task Prepare_keeps_a_60_px_face_of_a_12_MP_jpeg_in_the_768x1024_crop()
    {
        using var tmp = TestPaths.NewTempDir();
        var raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        RectangleF pasted;
        using (var scene = Composites.Background("rocket.jpg", 4000, 3000))
        {
            pasted = Composites.Paste(scene, Composites.AstronautUpper, 60, 0.24f * 4000, 0.24f * 3000);
            scene.SaveAsJpeg(Path.Combine(raw, "small-person.jpg"), new JpegEncoder { Quality = 90 });
        }
        var report = await DatasetPreparer.RunAsync(raw, tmp.File("out"), new PrepareOptions { MaxParallelism = 1 }, detector: fx.Detector);
        var item = Assert.Single(report.Manifest.Items);
        Assert.Equal(0.5, item.DecodeScale);
        var face = Assert.Single(item.Faces);
        Assert.True(BlazeFaceDetector.IoU(new RectangleF(face.X, face.Y, face.Width, face.Height), pasted) > 0.3f, $"face {face} is not the pasted face {pasted}");
        Assert.False(item.FocalFallback);
        var crop = new Rectangle(item.Crop.X, item.Crop.Y, item.Crop.Width, item.Crop.Height);
        Assert.True(Contains(crop, pasted), $"crop {crop} cuts the face {pasted}");
    }
}
