using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using DreamBooth.Toy;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Toy;

/// <summary>The pretrainer seeds torch's global generator (module initialisation draws from it): run alone, or a
/// parallel test's draws make two same-seed runs differ.</summary>
[Collection(DreamBooth.Tests.Models.SerialModelTests.Name)]
public class ToyPretrainerTests
{
    /// <summary>The tokenizer shipped with the toy model (data-samples/toy/model/tokenizer).</summary>
    static ClipTokenizer Tokenizer() => ClipTokenizer.FromDirectory(Path.Combine(TestPaths.DataSamples, "toy", "model", "tokenizer"));

    static ToyPretrainOptions Micro(int seed) => new()
    {
        Seed = seed, Model = ToyModelConfig.Micro, DatasetSize = 24, VaeSteps = 10, UNetSteps = 10, BatchSize = 4, WarmupSteps = 2,
        PreviewPrompts = ["a man with a red shirt on a beach", "ohwx man"], PreviewSteps = 2,
    };

    [Fact]
    public void Twenty_step_micro_pretrain_writes_a_diffusers_model_and_previews_reproducibly()
    {
        using var tmp = TestPaths.NewTempDir();
        var tok = Tokenizer();
        var events = new List<ToyPretrainProgress>();
        var a = new ToyPretrainer(Micro(3), tok).Run(tmp.File("a"), new Collect(events));
        var b = new ToyPretrainer(Micro(3), tok).Run(tmp.File("b"));

        Assert.Contains(events, e => e.Phase == "vae" && e.Step == 10);
        Assert.Contains(events, e => e.Phase == "unet" && e.Step == 10);
        Assert.True(double.IsFinite(a.VaeLoss) && double.IsFinite(a.UNetLoss));
        Assert.True(a.ScalingFactor > 0);
        Assert.Equal(a.VaeLoss, b.VaeLoss);
        Assert.Equal(a.UNetLoss, b.UNetLoss);
        Assert.Equal(8, a.PreviewFiles.Count); // 2 prompts × 4 pictures
        Assert.True(File.Exists(Path.Combine(a.OutputDirectory, "samples", "previews.png")));
        Assert.Contains("\"unet_steps\": 10", File.ReadAllText(Path.Combine(a.OutputDirectory, "pretrain.json")));

        foreach (var f in new[] { "model_index.json", "text_encoder/config.json", "text_encoder/model.safetensors", "unet/config.json",
                     "unet/diffusion_pytorch_model.safetensors", "vae/config.json", "vae/diffusion_pytorch_model.safetensors",
                     "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json" })
            Assert.True(File.Exists(Path.Combine(a.DiffusersDirectory, f)), f);
        var unetA = File.ReadAllBytes(Path.Combine(a.DiffusersDirectory, "unet", "diffusion_pytorch_model.safetensors"));
        var unetB = File.ReadAllBytes(Path.Combine(b.DiffusersDirectory, "unet", "diffusion_pytorch_model.safetensors"));
        Assert.Equal(unetA, unetB);
        Assert.Contains("\"F16\"", System.Text.Encoding.ASCII.GetString(unetA, 8, 400));
        Assert.Contains("down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight", System.Text.Encoding.ASCII.GetString(unetA, 8, (int)BitConverter.ToInt64(unetA, 0)));
        // the embedded layout: single file + tokenizer + configs, loadable and equal to the diffusers weights
        Assert.True(File.Exists(Path.Combine(a.ModelDirectory, ToyAssets.CheckpointFileName)));
        using (var fromSingle = ToyAssets.LoadModel(a.ModelDirectory))
        using (var fromDiffusers = DreamBooth.Checkpoints.StableDiffusionModel.Load(a.DiffusersDirectory))
        {
            var s1 = fromSingle.UNet.state_dict();
            var s2 = fromDiffusers.UNet.state_dict();
            Assert.Equal(s2.Count, s1.Count);
            foreach (var (k, v) in s2) Assert.True(v.to_type(ScalarType.Float32).allclose(s1[k].to_type(ScalarType.Float32)), k);
            Assert.Equal(a.ScalingFactor, fromSingle.Vae.Config.ScalingFactor, 5);
        }
        var vaeJson = File.ReadAllText(Path.Combine(a.DiffusersDirectory, "vae", "config.json"));
        Assert.Contains("\"scaling_factor\"", vaeJson);
    }

    [Fact]
    public void Dataset_renders_match_the_world_and_alphas_follow_sd_schedule()
    {
        var (images, captions) = ToyPretrainer.RenderDataset(3, 5, 32);
        Assert.Equal(3, captions.Count);
        using (images)
        {
            Assert.Equal(new long[] { 3, 3, 32, 32 }, images.shape);
            var rng = new Random(5);
            var first = ToyWorld.Sample(rng);
            Assert.Equal(ToyWorld.Caption(first), captions[0]);
            using var img = ToyWorld.Render(first, 32, 32);
            Assert.Equal(img[7, 20].G, images[0, 1, 20, 7].item<byte>());
        }
        using var acp = ToyPretrainer.AlphasCumprod();
        Assert.Equal(1 - 0.00085, acp[0].item<double>(), 10);
        Assert.Equal(0.0047, acp[999].item<double>(), 4); // SD1.x: ᾱ_999 ≈ 0.00466
    }

    [Fact]
    public void The_embedded_model_loads_with_the_default_toy_configs_and_stays_small()
    {
        var dir = Path.Combine(TestPaths.DataSamples, "toy", "model");
        using var model = ToyAssets.LoadModel(dir);
        var d = ToyModelConfig.Default;
        Assert.Equal(d.UNet.BlockOutChannels, model.UNet.Config.BlockOutChannels);
        Assert.Equal(d.Vae.BlockOutChannels, model.Vae.Config.BlockOutChannels);
        Assert.Equal(d.TextEncoder.HiddenSize, model.TextEncoder.Config.HiddenSize);
        Assert.NotEqual(0.18215, model.Vae.Config.ScalingFactor); // measured on the pretraining latents
        long bytes = Directory.GetFiles(dir, "*", SearchOption.AllDirectories).Sum(f => new FileInfo(f).Length);
        Assert.True(bytes <= 20L << 20, $"data-samples/toy/model is {bytes} bytes");
        Assert.True(File.Exists(Path.Combine(dir, "MODEL_CARD.md")));
    }

    [Fact]
    public void Bad_options_are_user_errors()
    {
        var tok = Tokenizer();
        Assert.NotNull(new ToyPretrainer(Micro(0), tok));
        Assert.Contains("threads", Assert.Throws<DreamBoothException>(() => new ToyPretrainer(Micro(0) with { Threads = 0 }, tok)).Message);
        Assert.Contains("steps", Assert.Throws<DreamBoothException>(() => new ToyPretrainer(Micro(0) with { UNetSteps = 0 }, tok)).Message);
        Assert.Contains("caption dropout", Assert.Throws<DreamBoothException>(() => new ToyPretrainer(Micro(0) with { CaptionDropout = 1.0 }, tok)).Message);
    }

    sealed class Collect(List<ToyPretrainProgress> list) : IProgress<ToyPretrainProgress>
    {
        public void Report(ToyPretrainProgress value) => list.Add(value);
    }
}
