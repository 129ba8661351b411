using DreamBooth.Data;

namespace DreamBooth.Tests.Data;

public class SubjectAndBucketTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    [Theory]
    [InlineData("astronaut.png")]
    [InlineData("camera.png")]
    public void Subject_crop_frames_the_person_with_a_preset_ratio(string photo)
    {
        using var img = Photos.Load(photo);
        var faces = fx.Detector.Detect(img).Faces;
        var face = Assert.Single(faces);
        var options = SubjectCropOptions.Default;
        var crop = SubjectCropper.Choose(img.Width, img.Height, faces, options);
        Assert.Contains(crop.Ratio, options.AspectRatios);
        Assert.True(crop.Rect.Left <= face.X && crop.Rect.Right >= face.X + face.Width && crop.Rect.Top <= face.Y && crop.Rect.Bottom >= face.Y + face.Height);
        Assert.Equal(crop.Ratio.Value, (double)crop.Rect.Width / crop.Rect.Height, 1);
        Assert.True(crop.Rect.Width < img.Width || crop.Rect.Height < img.Height, "head-and-shoulders crop should be tighter than the photo");
        var full = SubjectCropper.Choose(img.Width, img.Height, faces, options with { Framing = SubjectFraming.FullBody });
        Assert.True(full.Rect.Width * full.Rect.Height >= crop.Rect.Width * crop.Rect.Height);
    }

    [Fact]
    public void Several_people_largest_face_by_default_all_on_request()
    {
        FaceBox Face(float x, float y, float size) => new(x, y, size, size, 0.9f, [], "test");
        var big = Face(100, 100, 80);
        var small = Face(600, 120, 40);
        var one = SubjectCropper.Choose(1000, 700, [small, big], SubjectCropOptions.Default);
        Assert.True(one.Rect.Contains(new SixLabors.ImageSharp.Rectangle(100, 100, 80, 80)));
        Assert.False(one.Rect.IntersectsWith(new SixLabors.ImageSharp.Rectangle(600, 120, 40, 40)));
        var all = SubjectCropper.Choose(1000, 700, [small, big], SubjectCropOptions.Default with { AllFaces = true });
        Assert.True(all.Rect.Contains(new SixLabors.ImageSharp.Rectangle(100, 100, 80, 80)));
        Assert.True(all.Rect.Contains(new SixLabors.ImageSharp.Rectangle(600, 120, 40, 40)));
        Assert.True(all.Ratio.Value > 1, $"two people side by side want a landscape ratio, got {all.Ratio}");
    }

    [Fact]
    public void Without_faces_the_subject_crop_is_central_with_the_closest_ratio()
    {
        var crop = SubjectCropper.Choose(600, 400, [], SubjectCropOptions.Default);
        Assert.Equal(new AspectRatio(3, 2), crop.Ratio);
        Assert.Equal(new SixLabors.ImageSharp.Rectangle(0, 0, 600, 400), crop.Rect);
        var wide = SubjectCropper.Choose(1000, 400, [], SubjectCropOptions.Default);
        Assert.Equal(new AspectRatio(16, 9), wide.Ratio);
        Assert.Equal((711, 400), (wide.Rect.Width, wide.Rect.Height));
        Assert.InRange(wide.Rect.X + wide.Rect.Width / 2.0, 499, 501);
    }

    [Fact]
    public void Kohya_buckets_for_768x1024()
    {
        var b = AspectBuckets.Generate(new Bucket(768, 1024));
        Assert.Contains(new Bucket(768, 1024), b.Buckets);
        Assert.Contains(new Bucket(1024, 768), b.Buckets);
        Assert.Contains(new Bucket(832, 832), b.Buckets); // sqrt(786432) = 886 → 832
        Assert.Contains(new Bucket(256, 1024), b.Buckets);
        Assert.All(b.Buckets, x =>
        {
            Assert.True(x.Width % 64 == 0 && x.Height % 64 == 0);
            Assert.InRange(x.Width, 256, 1024);
            Assert.InRange(x.Height, 256, 1024);
            Assert.True(x.Width * x.Height <= 768 * 1024);
        });
        Assert.Equal(b.Buckets.Count, b.Buckets.Distinct().Count());
    }

    [Fact]
    public void Every_aspect_ratio_gets_a_nearby_bucket()
    {
        var b = AspectBuckets.Generate(new Bucket(768, 1024));
        Assert.Equal(new Bucket(1024, 768), b.Nearest(4000, 3000));
        Assert.Equal(new Bucket(768, 1024), b.Nearest(3000, 4000));
        Assert.Equal(new Bucket(832, 832), b.Nearest(512, 512));
        for (double ar = 0.3; ar <= 3.4; ar += 0.01)
        {
            var n = b.Nearest((int)(1000 * ar), 1000);
            // no other bucket is closer in log-aspect
            double err = Math.Abs(Math.Log(n.Aspect / ar));
            Assert.All(b.Buckets, o => Assert.True(err <= Math.Abs(Math.Log(o.Aspect / ((int)(1000 * ar) / 1000.0))) + 1e-3));
        }
    }
}
