using DreamBooth.Toy;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Toy;

public class ToyProbeTests
{
    [Fact]
    public void Reads_shirt_colour_and_background_of_rendered_scenes()
    {
        var rng = new Random(11);
        int shirtOk = 0, bgOk = 0, n = 120;
        for (int i = 0; i < n; i++)
        {
            var s = ToyWorld.Sample(rng);
            using var img = ToyWorld.Render(s);
            var r = ToyProbe.Analyze(img);
            Assert.True(r.FigureFound, ToyWorld.Describe(s));
            if (r.ShirtColor == s.ShirtColor) shirtOk++;
            if (r.Background == s.Background) bgOk++;
        }
        Assert.True(shirtOk >= 0.9 * n, $"shirt colour right for {shirtOk}/{n}");
        Assert.Equal(n, bgOk);
    }

    [Fact]
    public void Subject_images_score_high_and_plain_men_score_zero()
    {
        var subject = ToyWorld.SubjectInstances.Select(s => ToyProbe.Analyze(ToyWorld.Render(s))).ToList();
        Assert.All(subject, r => Assert.InRange(r.SubjectScore, 0.9, 1.0));
        Assert.Equal(1.0, ToyProbe.Summarize(subject).SubjectRate);

        var rng = new Random(5);
        var men = Enumerable.Range(0, 60).Select(_ => ToyProbe.Analyze(ToyWorld.Render(ToyWorld.SampleMan(rng)))).ToList();
        Assert.All(men, r => Assert.True(r.SubjectScore < 0.2, $"a man scored {r.SubjectScore}"));   // shaded blue edges can sit nearest purple
        Assert.True(men.Average(r => r.SubjectScore) < 0.03);
        var summary = ToyProbe.Summarize(men);
        Assert.Equal(0.0, summary.SubjectRate);
        Assert.Equal(7, summary.DistinctShirtColors);
        Assert.InRange(summary.ClassDiversity, 0.75, 0.9); // 7 of 9 colours roughly evenly: ln 7 / ln 9 = 0.886
    }

    [Fact]
    public void Alike_men_have_no_diversity_and_a_purple_man_counts_as_subject()
    {
        var rng = new Random(9);
        var one = ToyWorld.SampleMan(rng) with { ShirtColor = "green", ShirtPattern = ToyPattern.Plain };
        var same = Enumerable.Range(0, 12).Select(i => ToyProbe.Analyze(ToyWorld.Render(one with
        {
            Background = (ToyBackground)(i % 5), Position = (ToyPosition)(i % 3),
        }))).ToList();
        var s = ToyProbe.Summarize(same);
        Assert.Equal(1, s.DistinctShirtColors);
        Assert.Equal(0.0, s.ClassDiversity);
        Assert.Equal(0.0, s.MeanSubjectScore);

        var purple = ToyProbe.Analyze(ToyWorld.Render(one with { ShirtColor = "purple" }));
        Assert.True(purple.SubjectScore > 0.9);
    }

    [Fact]
    public void An_empty_background_has_no_figure()
    {
        foreach (var bg in Enum.GetValues<ToyBackground>())
        {
            using var img = ToyWorld.RenderBackground(bg);
            var r = ToyProbe.Analyze(img);
            Assert.False(r.FigureFound);
            Assert.Equal(bg, r.Background);
            Assert.Equal(0, r.SubjectScore);
        }
    }

    [Fact]
    public void Signature_hue_is_purple_only()
    {
        Assert.True(ToyProbe.IsSignature(130, 40, 170));
        foreach (var name in new[] { "red", "blue", "green", "yellow", "white", "black", "orange", "pink" })
        {
            var c = ToyWorld.Colors[name];
            Assert.False(ToyProbe.IsSignature(c.R, c.G, c.B), name);
        }
    }
}
