using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Data;

public class FocalCropTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    public static TheoryData<string, int, int> PeopleAndTargets()
    {
        var d = new TheoryData<string, int, int>();
        foreach (var photo in new[] { "astronaut.png", "camera.png" })
            foreach (var (w, h) in new[] { (512, 1024), (768, 1024), (512, 512), (1024, 576) }) // 1:2, 3:4, 1:1, 16:9
                d.Add(photo, w, h);
        return d;
    }

    [Theory]
    [MemberData(nameof(PeopleAndTargets))]
    public void Crops_keep_the_whole_face(string photo, int w, int h)
    {
        using var img = Photos.Load(photo);
        var faces = fx.Detector.Detect(img).Faces;
        var face = Assert.Single(faces);
        foreach (var options in new[] { FocalCropOptions.Recipe, FocalCropOptions.A1111 })
        {
            var plan = FocalCrop.Plan(img, faces, w, h, options);
            var r = plan.SourceRect;
            Assert.True(r.Left <= face.X && r.Top <= face.Y && r.Right >= face.X + face.Width && r.Bottom >= face.Y + face.Height,
                $"{photo} {w}x{h}: crop {r} cuts the face {face.Rect}");
            Assert.True(r.X >= 0 && r.Y >= 0 && r.Right <= img.Width && r.Bottom <= img.Height, $"crop {r} leaves the image");
            Assert.Equal((double)w / h, (double)r.Width / r.Height, 2);
            using var output = FocalCrop.Apply(img, plan);
            Assert.Equal((w, h), (output.Width, output.Height));
        }
    }

    [Fact]
    public void No_face_means_a_centred_crop()
    {
        using var img = Photos.Load("coffee.png"); // 600x400
        var plan = FocalCrop.Plan(img, [], 512, 512, FocalCropOptions.Recipe);
        Assert.True(plan.Analysis.Fallback);
        Assert.Equal(new Rectangle(100, 0, 400, 400), plan.SourceRect);
        var tall = FocalCrop.Plan(img, [], 300, 400, FocalCropOptions.Recipe);
        Assert.Equal(new Rectangle(150, 0, 300, 400), tall.SourceRect);
    }

    [Fact]
    public void Cover_scaling_never_pads_where_A1111_did()
    {
        // A1111 scales a 4:5 portrait by width to 768x960 and pads 64 px of black for a 768x1024 target
        using var img = new Image<Rgb24>(1080, 1350);
        var plan = FocalCrop.Plan(img, [], 768, 1024, FocalCropOptions.Recipe);
        Assert.Equal(1350, plan.SourceRect.Height);
        Assert.Equal(1013, plan.SourceRect.Width, 1.0);
        Assert.True(plan.SourceRect.X >= 0 && plan.SourceRect.Right <= 1080);
        Assert.Equal(1024.0 / 1350, plan.Scale, 6);
    }

    [Fact]
    public void A1111_weights_normalise_to_58_32_10_when_every_detector_answers()
    {
        using var img = Photos.Load("astronaut.png");
        var faces = fx.Detector.Detect(img).Faces;
        var plan = FocalCrop.Plan(img, faces, 384, 512, FocalCropOptions.A1111);
        var a = plan.Analysis;
        Assert.NotEmpty(a.EdgePoints);
        Assert.Single(a.EntropyPoints);
        Assert.Equal(0.58, a.FaceWeight, 2);
        Assert.Equal(0.32, a.EdgesWeight, 2);
        Assert.Equal(0.10, a.EntropyWeight, 2);
        // recipe weights: the focal point is the face point itself
        var recipe = FocalCrop.Plan(img, faces, 384, 512, FocalCropOptions.Recipe).Analysis;
        Assert.Equal(faces[0].FocalPoint, recipe.FocalPoint);
        Assert.Equal(1.0, recipe.FaceWeight);
    }

    [Fact]
    public void Entropy_scores_are_Shannon_or_A1111s()
    {
        var ramp = Enumerable.Range(0, 256).Select(i => (byte)i).ToArray(); // 16x16, every level once
        Assert.Equal(8.0, FocalCrop.ShannonEntropy(ramp, 16, 0, 0, 16, 16), 9);
        var flat = new byte[256];
        Assert.Equal(0.0, FocalCrop.ShannonEntropy(flat, 16, 0, 0, 16, 16), 9);
        var halves = Enumerable.Range(0, 256).Select(i => (byte)(i % 16 < 8 ? 0 : 255)).ToArray();
        Assert.Equal(1.0, FocalCrop.ShannonEntropy(halves, 16, 0, 0, 16, 16), 9);
        // A1111: -Σlog2 p, lowest (2) at a 50/50 split and larger when lopsided
        Assert.Equal(2.0, FocalCrop.A1111Entropy(halves, 16, 0, 0, 16, 16), 9);
        var mostlyBlack = Enumerable.Range(0, 256).Select(i => (byte)(i < 32 ? 255 : 0)).ToArray();
        Assert.True(FocalCrop.A1111Entropy(mostlyBlack, 16, 0, 0, 16, 16) > 3);
    }

    [Fact]
    public void Entropy_window_finds_the_textured_side()
    {
        int w = 200, h = 100;
        var g = new byte[w * h];
        var rng = new Random(1);
        for (int y = 0; y < h; y++)
            for (int x = 150; x < w; x++) g[y * w + x] = (byte)rng.Next(256);
        var p = FocalCrop.EntropyPoint(g, w, h, 100, 100, EntropyMode.Shannon);
        Assert.NotNull(p);
        Assert.Equal(150f, p.Value.X); // the window flush with the right edge (A1111 never scores it)
        Assert.Null(FocalCrop.EntropyPoint(g, w, h, 200, 100, EntropyMode.Shannon));
    }

    [Fact]
    public void Corner_points_find_the_corners_of_a_square()
    {
        var g = new byte[100 * 100];
        for (int y = 30; y < 60; y++)
            for (int x = 30; x < 60; x++) g[y * 100 + x] = 255;
        var pts = FocalCrop.CornerPoints(g, 100, 100);
        Assert.Equal(4, pts.Count);
        Assert.All(pts, p => Assert.True((Math.Abs(p.X - 30) <= 2 || Math.Abs(p.X - 59) <= 2) && (Math.Abs(p.Y - 30) <= 2 || Math.Abs(p.Y - 59) <= 2), $"{p}"));
    }
}
