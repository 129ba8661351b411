using DreamBooth.Data;
using DreamBooth.Runtime;
using SixLabors.ImageSharp;

namespace DreamBooth.Tests.Data;

public class BlazeFaceDetectorTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    static void AssertBox(RectangleF expected, FaceBox actual, float tol)
    {
        Assert.InRange(actual.X, expected.X - tol, expected.X + tol);
        Assert.InRange(actual.Y, expected.Y - tol, expected.Y + tol);
        Assert.InRange(actual.Width, expected.Width - tol, expected.Width + tol);
        Assert.InRange(actual.Height, expected.Height - tol, expected.Height + tol);
    }

    [Fact]
    public void Anchors_follow_the_MediaPipe_layout()
    {
        var front = BlazeFaceDetector.SsdAnchors(128, [8, 16, 16, 16]);
        var back = BlazeFaceDetector.SsdAnchors(256, [16, 32, 32, 32]);
        Assert.Equal(896, front.Length);
        Assert.Equal(896, back.Length);
        // 16x16 grid, 2 per cell, order y, x, anchor
        Assert.Equal(new BlazeFaceDetector.Anchor(0.5f / 16, 0.5f / 16), front[0]);
        Assert.Equal(front[0], front[1]);
        Assert.Equal(new BlazeFaceDetector.Anchor(1.5f / 16, 0.5f / 16), front[2]);
        Assert.Equal(new BlazeFaceDetector.Anchor(0.5f / 16, 1.5f / 16), front[32]);
        // then the 8x8 grid with 6 per cell
        Assert.Equal(new BlazeFaceDetector.Anchor(0.5f / 8, 0.5f / 8), front[512]);
        Assert.Equal(new BlazeFaceDetector.Anchor(1.5f / 8, 0.5f / 8), front[518]);
        Assert.Equal(new BlazeFaceDetector.Anchor(7.5f / 8, 7.5f / 8), front[895]);
        Assert.Equal(front, back); // same normalized layout from the 16- and 32-stride maps
    }

    [Fact]
    public void Decoding_applies_the_anchor_offset_and_scale()
    {
        var anchors = new[] { new BlazeFaceDetector.Anchor(0.25f, 0.75f) };
        var regs = new float[16];
        regs[0] = 12.8f; regs[1] = -12.8f; regs[2] = 25.6f; regs[3] = 51.2f; regs[4] = 0; regs[5] = 0;
        var d = Assert.Single(BlazeFaceDetector.Decode([2f], regs, anchors, 128, 0.5f));
        Assert.Equal(0.35f - 0.1f, d.XMin, 4); Assert.Equal(0.35f + 0.1f, d.XMax, 4);
        Assert.Equal(0.65f - 0.2f, d.YMin, 4); Assert.Equal(0.65f + 0.2f, d.YMax, 4);
        Assert.Equal(1 / (1 + MathF.Exp(-2f)), d.Score, 5);
        Assert.Equal(0.25f, d.Keypoints[0], 5); Assert.Equal(0.75f, d.Keypoints[1], 5);
        Assert.Empty(BlazeFaceDetector.Decode([-2f], regs, anchors, 128, 0.5f)); // sigmoid(-2) = 0.12 < 0.5
    }

    [Fact]
    public void Weighted_nms_averages_overlaps_and_keeps_the_top_score()
    {
        var a = new BlazeFaceDetector.RawDetection(0, 0, 10, 10, 0.9f, [1, 1]);
        var b = new BlazeFaceDetector.RawDetection(1, 1, 11, 11, 0.6f, [2, 2]);
        var far = new BlazeFaceDetector.RawDetection(50, 50, 60, 60, 0.7f, [55, 55]);
        var r = BlazeFaceDetector.WeightedNms([b, far, a], 0.3f);
        Assert.Equal(2, r.Count);
        Assert.Equal(0.9f, r[0].Score);
        Assert.Equal(0.6f / 1.5f, r[0].XMin, 4);      // (0·0.9 + 1·0.6) / 1.5
        Assert.Equal(10 + 0.6f / 1.5f, r[0].XMax, 4);
        Assert.Equal(1 + 0.6f / 1.5f, r[0].Keypoints[0], 4);
        Assert.Equal(50f, r[1].XMin, 3);
        Assert.Equal(0.7f, r[1].Score);
    }

    [Fact]
    public void Finds_the_astronauts_face()
    {
        using var img = Photos.Load("astronaut.png");
        var face = Assert.Single(fx.Detector.Detect(img).Faces);
        AssertBox(Photos.AstronautFace, face, 10);
        Assert.InRange(face.Score, 0.85f, 1f);
        Assert.InRange(face.Confirmation!.Value, 0.85f, 1f); // mean short-range score on the ×3/×4/×5 close-ups
        // keypoints: right eye left of left eye (image coords), both above the nose tip, mouth below the nose
        Assert.True(face.Keypoints[0].X < face.Keypoints[1].X);
        Assert.True(face.Keypoints[2].Y > face.Keypoints[0].Y && face.Keypoints[3].Y > face.Keypoints[2].Y);
    }

    [Fact]
    public void Finds_the_small_face_of_the_cameraman_through_tiles()
    {
        using var img = Photos.Load("camera.png");
        var face = Assert.Single(fx.Detector.Detect(img).Faces);
        AssertBox(Photos.CameraFace, face, 10);
        Assert.InRange(face.Score, 0.75f, 1f);
    }

    [Theory]
    [InlineData("coffee.png")]
    [InlineData("rocket.jpg")]
    public void No_face_in_photos_without_people(string name)
    {
        using var img = Photos.Load(name);
        Assert.Empty(fx.Detector.Detect(img).Faces);
    }

    [Fact]
    public void The_cat_is_a_rejected_candidate_not_a_face()
    {
        using var img = Photos.Load("chelsea.png");
        var r = fx.Detector.Detect(img);
        Assert.Empty(r.Faces);
        // the 256 model fires on the cat's head at about 0.8; the short-range model does not confirm it
        var cat = Assert.Single(r.Rejected, f => f.Model == "back");
        Assert.InRange(cat.Score, 0.7f, 0.9f);
        Assert.InRange(cat.CenterX, 120, 260);
        Assert.InRange(cat.CenterY, 80, 220);
        Assert.InRange(cat.Confirmation!.Value, 0f, 0.65f); // measured 0.50; real faces 0.85 and more
        // without the human-face policy the cat would steer the crop
        using var lax = BlazeFaceDetector.Create(new BlazeFaceOptions { RequireShortRangeConfirmation = false });
        Assert.Contains(lax.Detect(img).Faces, f => f.Score > 0.7f);
    }

    [Fact]
    public void Tiles_reach_every_edge_and_overlap_by_a_quarter()
    {
        foreach (int length in new[] { 257, 300, 933, 1024, 1245, 2048 })
            foreach (int tile in new[] { 256, 384, 467 })
            {
                if (tile >= length) continue;
                var starts = BlazeFaceDetector.TileStarts(length, tile);
                Assert.Equal(0, starts[0]);
                Assert.Equal(length - tile, starts[^1]); // flush with the far edge: no strip left unscanned
                for (int i = 1; i < starts.Count; i++)
                    Assert.InRange(starts[i] - starts[i - 1], 1, tile * 3 / 4); // any face up to a quarter tile lies wholly in one tile
            }
        Assert.Equal([0], BlazeFaceDetector.TileStarts(200, 256));
        // 12 MP decoded at 1/2 → 1245×934 working copy: 4×3 tiles of 467 px, then 7×5 of 256 px
        Assert.Equal([467, 256], BlazeFaceDetector.TileSides(1245, 934));
        Assert.Equal(4, BlazeFaceDetector.TileStarts(1245, 467).Count);
        Assert.Equal(7 * 5, BlazeFaceDetector.TileStarts(1245, 256).Count * BlazeFaceDetector.TileStarts(934, 256).Count);
        Assert.Equal([256], BlazeFaceDetector.TileSides(512, 512));
        Assert.Equal([200], BlazeFaceDetector.TileSides(300, 200));
        Assert.Empty(BlazeFaceDetector.TileSides(200, 200)); // one tile would be the whole image again
    }

    [Fact]
    public void The_working_copy_makes_the_smallest_face_14_px()
    {
        var o = BlazeFaceOptions.Default;
        foreach (var (w, h) in new[] { (4000, 3000), (2000, 1500), (3000, 4000), (6000, 4000) })
        {
            double s = o.WorkingScale(w, h);
            Assert.Equal(BlazeFaceOptions.TileFacePixels, o.MinFaceSize * Math.Min(w, h) * s, 3); // a 1.5 %-of-the-short-side face → 14 px
        }
        Assert.Equal(1.0, o.WorkingScale(512, 512));                        // never upscaled
        Assert.Equal(2048.0 / 30000, o.WorkingScale(30000, 3000), 9);        // panoramas: at most MaxSide on the long side
        Assert.Equal(1024.0 / 4000, (o with { Tiles = false }).WorkingScale(4000, 3000), 9);
    }

    [Fact]
    public void Detector_settings_out_of_range_are_refused_with_their_name()
    {
        BlazeFaceOptions.Default.Validate();
        foreach (var (bad, name) in new (BlazeFaceOptions, string)[]
        {
            (new() { MinFaceSize = 0 }, "MinFaceSize"), (new() { MinFaceSize = 2 }, "MinFaceSize"),
            (new() { ConfirmScales = [] }, "ConfirmScales"), (new() { ConfirmScales = [4, 0.5f] }, "ConfirmScales"),
            (new() { ConfirmThreshold = 1.5f }, "ConfirmThreshold"), (new() { BackThreshold = 0 }, "BackThreshold"),
            (new() { MaxSide = 100 }, "MaxSide"),
        })
        {
            var e = Assert.Throws<DreamBoothException>(() => BlazeFaceDetector.Create(bad));
            Assert.Contains(name, e.Message);
        }
    }

    [Fact]
    public void A_model_with_the_wrong_checksum_is_refused()
    {
        using var tmp = Infrastructure.TestPaths.NewTempDir();
        var copy = tmp.File("front.onnx");
        var bytes = File.ReadAllBytes(WorkbenchAssets.Find(WorkbenchAssets.BlazeFaceShortRange));
        bytes[^1] ^= 0xFF;
        File.WriteAllBytes(copy, bytes);
        var e = Assert.Throws<DreamBoothException>(() => BlazeFaceDetector.Create(copy, WorkbenchAssets.Find(WorkbenchAssets.BlazeFaceBack)));
        Assert.Contains("SHA-256", e.Message);
    }
}
