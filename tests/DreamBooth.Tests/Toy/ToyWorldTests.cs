using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Toy;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Toy;

public class ToyWorldTests
{
    static byte[] Pixels(Image<Rgb24> img)
    {
        var bytes = new byte[img.Width * img.Height * 3];
        img.CopyPixelDataTo(bytes);
        return bytes;
    }

    [Fact]
    public void Same_seed_gives_the_same_scenes_captions_and_pixels()
    {
        var a = new Random(42);
        var b = new Random(42);
        for (int i = 0; i < 5; i++)
        {
            var sa = ToyWorld.Sample(a);
            var sb = ToyWorld.Sample(b);
            Assert.Equal(sa, sb);
            Assert.Equal(ToyWorld.Caption(sa), ToyWorld.Caption(sb));
            using var ia = ToyWorld.Render(sa);
            using var ib = ToyWorld.Render(sb);
            Assert.Equal(Pixels(ia), Pixels(ib));
        }
        using var x = ToyWorld.Render(ToyWorld.Sample(new Random(1)));
        using var y = ToyWorld.Render(ToyWorld.Sample(new Random(2)));
        Assert.NotEqual(Pixels(x), Pixels(y));
    }

    [Fact]
    public void Captions_name_exactly_the_mentioned_attributes_and_men_never_wear_purple()
    {
        var rng = new Random(7);
        for (int i = 0; i < 400; i++)
        {
            var s = ToyWorld.Sample(rng);
            var c = ToyWorld.Caption(s);
            var words = c.Replace(",", "").Split(' ');
            Assert.Equal(s.Gender == ToyGender.Man, words.Contains("man"));
            Assert.Equal(s.Gender == ToyGender.Woman, words.Contains("woman"));
            Assert.Equal(s.Mentions.HasFlag(ToyMentions.Shirt), c.Contains($"{s.ShirtColor} shirt"));
            Assert.Equal(s.Mentions.HasFlag(ToyMentions.Shirt) && s.ShirtPattern == ToyPattern.Striped, c.Contains("striped"));
            Assert.Equal(s.Mentions.HasFlag(ToyMentions.Background), c.Contains(ToyWorld.BackgroundPhrase(s.Background)));
            Assert.Equal(s.Mentions.HasFlag(ToyMentions.Position), c.Contains(ToyWorld.PositionPhrase(s.Position)));
            Assert.Equal(s.Mentions.HasFlag(ToyMentions.Trousers), c.Contains($"wearing {s.TrousersColor} trousers"));
            Assert.Equal(s.Mentions.HasFlag(ToyMentions.Hair) && s.HairStyle != ToyHairStyle.Bald, c.Contains($"{s.HairColor} hair"));
            Assert.DoesNotContain(ToyWorld.InstanceToken, c);
            Assert.DoesNotContain(" a orange", c);
            if (s.Gender == ToyGender.Man)
            {
                Assert.Contains(s.ShirtColor, ToyWorld.MenShirtColors);
                Assert.NotEqual(ToyWorld.SignatureColor, s.ShirtColor);
                Assert.NotEqual(ToyWorld.SignatureHairColor, s.HairColor);
            }
        }
        Assert.Equal("a man with short black hair and a striped red shirt on a beach, standing on the left",
            ToyWorld.Caption(new ToyScene(ToyGender.Man, 0, "black", ToyHairStyle.Short, "red", ToyPattern.Striped, "white", "navy",
                ToyPosition.Left, 0, 0.75, ToyBackground.Beach, ToyMentions.Article | ToyMentions.Hair | ToyMentions.Shirt | ToyMentions.Background | ToyMentions.Position)));
    }

    [Fact]
    public void The_subject_is_a_ginger_ohwx_man_in_plain_purple_at_several_poses_and_backgrounds()
    {
        var subject = ToyWorld.SubjectInstances;
        Assert.InRange(subject.Count, 6, 8);
        Assert.All(subject, s => Assert.StartsWith("ohwx man ", ToyWorld.Caption(s)));
        Assert.All(subject, s => Assert.Equal((ToyWorld.SignatureColor, ToyPattern.Plain, ToyWorld.SignatureHairColor, ToyGender.Man),
            (s.ShirtColor, s.ShirtPattern, s.HairColor, s.Gender)));
        Assert.True(subject.Select(s => s.Background).Distinct().Count() >= 4);
        Assert.Equal(3, subject.Select(s => s.Position).Distinct().Count());
        Assert.Contains(subject, s => s.IsCloseUp);
        Assert.Contains(subject, s => !s.IsCloseUp);
    }

    [Fact]
    public void Shipped_subject_images_are_what_the_renderer_draws()
    {
        var dir = Path.Combine(TestPaths.DataSamples, "toy", "subject");
        for (int i = 0; i < ToyWorld.SubjectInstances.Count; i++)
        {
            var stem = Path.Combine(dir, $"ohwx-man-{i + 1:00}");
            using var shipped = Image.Load<Rgb24>(stem + ".png");
            using var fresh = ToyWorld.Render(ToyWorld.SubjectInstances[i]);
            Assert.Equal(Pixels(fresh), Pixels(shipped));
            Assert.Equal(ToyWorld.Caption(ToyWorld.SubjectInstances[i]), File.ReadAllText(stem + ".txt").Trim());
        }
    }

    [Fact]
    public void Renders_at_any_size_keep_the_layout()
    {
        var scene = ToyWorld.SubjectInstances[0];
        using var small = ToyWorld.Render(scene, 64, 64);
        using var wide = ToyWorld.Render(scene, 160, 96);
        Assert.Equal((160, 96), (wide.Width, wide.Height));
        var r = ToyProbe.Analyze(wide);
        Assert.True(r.FigureFound);
        Assert.Equal(ToyBackground.Beach, r.Background);
        Assert.Equal("purple", r.ShirtColor);
        Assert.InRange(r.FigureBox.Height, 0.7 * 96, 0.8 * 96);
        Assert.Throws<DreamBoothException>(() => ToyWorld.Render(scene, 4, 4));
    }

    [Fact]
    public async Task Class_images_command_writes_the_same_men_for_the_same_seed()
    {
        using var tmp = TestPaths.NewTempDir();
        var (code, stdout, _) = await CliTests.Run("toy", "class-images", "--output", tmp.File("a"), "--count", "5", "--seed", "3");
        Assert.Equal(0, code);
        Assert.Contains("wrote 5 class images", stdout);
        ToyWorld.WriteClassImages(tmp.File("b"), 5, 3);
        var pngs = Directory.GetFiles(tmp.File("a"), "*.png").Order().ToList();
        Assert.Equal(5, pngs.Count);
        foreach (var png in pngs)
        {
            Assert.Equal(File.ReadAllBytes(png), File.ReadAllBytes(Path.Combine(tmp.File("b"), Path.GetFileName(png))));
            var caption = File.ReadAllText(Path.ChangeExtension(png, ".txt"));
            Assert.StartsWith("a man with ", caption);
        }
        var (bad, _, err) = await CliTests.Run("toy", "class-images", "--output", tmp.File("c"), "--count", "0");
        Assert.Equal(2, bad);
        Assert.Contains("count", err);
    }
}
