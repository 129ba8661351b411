using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Pipelines;

/// <summary>A txt2img pipeline over the tiny random configs of the real architectures (CPU, seconds).</summary>
static class TinyPipeline
{
    static ClipTokenizer? _tokenizer;

    public static ClipTokenizer Tokenizer =>
        _tokenizer ??= ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz);

    /// <summary>Same weights for the same <paramref name="weightSeed"/>.</summary>
    public static Txt2ImgPipeline Create(long weightSeed = 1234, PipelineOptions? options = null)
    {
        manual_seed(weightSeed);
        var te = new CLIPTextModel(CLIPTextConfig.Tiny);
        var unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
        var vae = new AutoencoderKL(AutoencoderKLConfig.Tiny);
        return new Txt2ImgPipeline(Tokenizer, te, unet, vae, NoiseSchedule.StableDiffusion15, "tiny-random", "0123456789", options);
    }

    public static GenerationRequest Request(string sampler = "Euler a", int steps = 4) => new()
    {
        Prompt = "a photo of a man",
        NegativePrompt = "blurry",
        Sampler = sampler,
        Steps = steps,
        Width = 16,
        Height = 24,
        Seed = 42,
    };
}
