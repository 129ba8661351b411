using System.Text;
using DreamBooth.Data;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Reliability.Fuzz;

/// <summary>The parsers that read files a user may have been handed by a stranger, with valid seed files built here.</summary>
public static class FuzzTargets
{
    static readonly IReadOnlyList<(string, Mutation)> JsonMutations = [.. Mutators.Binary, .. Mutators.Json, .. Mutators.Json];

    static byte[] Utf8(string s) => Encoding.UTF8.GetBytes(s);
    static string Text(byte[] b) => Encoding.UTF8.GetString(b); // what File.ReadAllText does with invalid UTF-8

    public static FuzzTarget TrainingConfigJson => new("training config.json",
        () =>
        [
            Utf8(new TrainingConfig { PretrainedModel = "model.safetensors", Concepts = [new ConceptConfig { InstanceDir = "photos" }] }.ToJson()),
            Utf8(new TrainingConfig
            {
                PretrainedModel = "runwayml/stable-diffusion-v1-5", OutputDir = "out", Epochs = 3, PreviewPrompts = ["a photo of ohwx man"],
                Concepts = [new ConceptConfig { InstanceDir = "inst", ClassDir = "class", InstancePrompt = "[filewords], ohwx man" }],
            }.ToJson()),
        ],
        JsonMutations,
        b => TrainingConfig.FromJson(Text(b), "config.json").ThrowIfInvalid(checkFolders: false, "config.json"),
        Weight: 2);

    public static FuzzTarget A1111DbConfig => new("A1111 db_config.json",
        () => [File.ReadAllBytes(Path.Combine(TestPaths.RepoRoot, "tests", "DreamBooth.Tests", "Training", "Fixtures", "db_config.json"))],
        JsonMutations,
        b => A1111DbConfigImporter.Import(Text(b), "db_config.json").Config.ThrowIfInvalid(checkFolders: false, "db_config.json"),
        Weight: 2);

    public static FuzzTarget ClipConfig => new("text_encoder config.json",
        () => [Utf8(CLIPTextConfig.StableDiffusion15.ToJson()), Utf8(CLIPTextConfig.Tiny.ToJson())],
        JsonMutations,
        b => CLIPTextConfig.FromJson(Text(b), "config.json"));

    public static FuzzTarget UNetConfig => new("unet config.json",
        () => [Utf8(UNet2DConditionConfig.StableDiffusion15.ToJson()), Utf8(UNet2DConditionConfig.Tiny.ToJson())],
        JsonMutations,
        b => UNet2DConditionConfig.Parse(Text(b), "unet/config.json").Validate("unet/config.json"));

    public static FuzzTarget VaeConfig => new("vae config.json",
        () => [Utf8(AutoencoderKLConfig.StableDiffusion15.ToJson()), Utf8(AutoencoderKLConfig.Tiny.ToJson())],
        JsonMutations,
        b => AutoencoderKLConfig.Parse(Text(b), "vae/config.json").Validate("vae/config.json"));

    public static FuzzTarget Manifest => new("dataset manifest.json",
        () => [Utf8(SampleManifest().ToJson())],
        JsonMutations,
        b => DatasetManifest.FromJson(Text(b), "manifest.json"));

    /// <summary>The trainer's resume state (optimizer moments, RNG, counters): a binary format with counts, ranks, shapes and lengths.</summary>
    public static FuzzTarget TrainingState
    {
        get
        {
            string dir = Path.Combine(Path.GetTempPath(), "dreambooth-tests", "fuzz-state-" + Guid.NewGuid().ToString("N")[..8]);
            Directory.CreateDirectory(dir);
            return new FuzzTarget("training state (TensorStateFile)",
                () =>
                {
                    string seedPath = Path.Combine(dir, "seed.bin");
                    using var scope = NewDisposeScope();
                    TensorStateFile.Save(seedPath, new Dictionary<string, Tensor>
                    {
                        ["optimizer.exp_avg.0"] = torch.arange(6, ScalarType.Float32).reshape(2, 3),
                        ["step"] = TensorStateFile.Scalar(42L),
                        ["ema.shadow"] = torch.ones(4, ScalarType.BFloat16),
                        ["empty"] = torch.empty(0, 3),
                        ["rng"] = torch.arange(16, ScalarType.Byte),
                    });
                    return [File.ReadAllBytes(seedPath)];
                },
                Mutators.Binary,
                b =>
                {
                    string path = Path.Combine(dir, $"case-{Environment.CurrentManagedThreadId}.bin");
                    File.WriteAllBytes(path, b);
                    foreach (var t in TensorStateFile.Load(path).Values) t.Dispose();
                },
                Weight: 2);
        }
    }

    public static IEnumerable<FuzzTarget> All =>
        [TrainingConfigJson, A1111DbConfig, ClipConfig, UNetConfig, VaeConfig, Manifest, TrainingState, .. CheckpointFuzzTargets.All];

    static DatasetManifest SampleManifest() => new()
    {
        Input = "/photos", Fingerprint = new string('a', 64), Mode = "focal", Size = "768x1024",
        Items =
        [
            new ManifestItem
            {
                Source = "a.jpg", Sha256 = new string('b', 64), OriginalWidth = 1200, OriginalHeight = 900,
                Faces = [new ManifestFace(10, 20, 30, 40, 0.9f, "blazeface")], FocalX = 0.5f, FocalY = 0.4f,
                Crop = new ManifestRect(0, 0, 900, 900), Output = "0001.png", OutputWidth = 512, OutputHeight = 512, Bucket = "512x512",
                Warnings = ["small face"],
            },
        ],
        Skipped = [new ManifestSkip("bad.jpg", "corrupt", "truncated JPEG")],
    };
}
