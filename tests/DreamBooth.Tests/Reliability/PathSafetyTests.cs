using DreamBooth.Data;
using DreamBooth.Tests.Data;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Reliability;

/// <summary>Names taken from configs and source files never leave the output folder, and settings are refused before any heavy work.</summary>
public class PathSafetyTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    [Theory]
    [InlineData("../escape")]
    [InlineData("..")]
    [InlineData("a/b")]
    [InlineData("a\\b")]
    [InlineData("tab\tname")]
    [InlineData("bell\u0007")]
    [InlineData("CON")]
    [InlineData("nul.txt")]
    [InlineData("COM1")]
    [InlineData(".hidden")]
    [InlineData("-rf")]
    [InlineData("")]
    [InlineData("trailing.")]
    [InlineData("c:drive")]
    public void Unsafe_save_names_are_refused_by_validation_naming_the_setting(string name)
    {
        var cfg = new TrainingConfig { Name = name, PretrainedModel = "model.safetensors", Concepts = [new ConceptConfig { InstanceDir = "photos" }] };
        var e = Assert.Throws<DreamBoothException>(() => cfg.ThrowIfInvalid(checkFolders: false));
        Assert.Contains("name = ", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.DoesNotContain('\u0007', e.Message);
    }

    [Theory]
    [InlineData("dreambooth")]
    [InlineData("ohwx-man_v1.5 (sd15)")]
    [InlineData("Ünïcode名前")]
    public void Ordinary_save_names_pass(string name)
    {
        var cfg = new TrainingConfig { Name = name, PretrainedModel = "model.safetensors", Concepts = [new ConceptConfig { InstanceDir = "photos" }] };
        Assert.DoesNotContain(cfg.Validate(checkFolders: false), p => p.StartsWith("name"));
    }

    [Fact]
    public void Bad_values_are_all_reported_before_any_heavy_work()
    {
        // validation is pure: no model is loaded and no folder created, even when every value is wrong
        using var dir = TestPaths.NewTempDir();
        var cfg = new TrainingConfig
        {
            Name = "../x", PretrainedModel = dir.File("missing.safetensors"), OutputDir = dir.File("out"), LearningRate = -1, Epochs = 0,
            Concepts = [new ConceptConfig { InstanceDir = dir.File("nowhere") }], MixedPrecision = "fp8", Optimizer = "sgd",
        };
        var problems = cfg.Validate(checkFolders: true);
        Assert.True(problems.Count >= 6, string.Join("\n", problems));
        Assert.False(Directory.Exists(dir.File("out")));
    }

    [Fact]
    public async Task Prepared_outputs_from_hostile_source_names_stay_plain_files_inside_the_output_folder()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = tmp.File("raw");
        Directory.CreateDirectory(Path.Combine(raw, "sub"));
        string[] names = ["CON.png", "-rf.png", "ctl\u0001x.png", "bell\u0007.png", "back\\slash.png", "co:lon.png", "sub/a..b.png", "trail. .png", "nul.png"];
        for (int i = 0; i < names.Length; i++)
        {
            using var img = new Image<Rgb24>(100 + 10 * i, 80, new Rgb24((byte)(20 * i), 100, 50));
            img.SaveAsPng(Path.Combine(raw, names[i]));
        }
        string outDir = tmp.File("out");
        var report = await DatasetPreparer.RunAsync(raw, outDir, new PrepareOptions { Size = new Bucket(64, 96), MaxParallelism = 2 }, detector: fx.Detector);

        Assert.Equal(names.Length, report.Manifest.Items.Count);
        string root = Path.GetFullPath(outDir) + Path.DirectorySeparatorChar;
        foreach (var item in report.Manifest.Items)
        {
            string full = Path.GetFullPath(Path.Combine(outDir, item.Output));
            Assert.StartsWith(root, full);
            Assert.Equal(Path.GetFileName(full), item.Output); // flat: no sub-folders, no separators
            Assert.DoesNotContain(item.Output, c => char.IsControl(c) || c is '\\' or ':' or '*' or '?' or '"' or '<' or '>' or '|');
            Assert.False(item.Output.StartsWith('.') || item.Output.StartsWith('-'), item.Output);
            Assert.DoesNotMatch(@"^(?i:con|prn|aux|nul|com\d|lpt\d)(\.|$)", item.Output);
            Assert.True(File.Exists(full));
        }
        Assert.Equal(report.Manifest.Items.Count, report.Manifest.Items.Select(i => i.Output).Distinct(StringComparer.OrdinalIgnoreCase).Count());
    }
}
