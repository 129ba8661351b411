using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Text;

namespace DreamBooth.Tests.Infrastructure;

/// <summary>The tiny SD 1.x architecture with random weights, and the options that load its single files back.</summary>
public static class TinyModel
{
    static readonly Lazy<ClipTokenizer> s_tokenizer = new(() => ClipTokenizer.FromBpeGz(TestPaths.ClipBpeGz));

    /// <summary>CLIP's tokenizer from the repository's vocabulary fixture (built once).</summary>
    public static ClipTokenizer Tokenizer => s_tokenizer.Value;

    /// <summary>Loads a tiny model's single file: the tiny configs and <see cref="Tokenizer"/>.</summary>
    public static ModelLoadOptions LoadOptions => new()
    {
        Tokenizer = Tokenizer,
        TextEncoderConfig = CLIPTextConfig.Tiny,
        UNetConfig = UNet2DConditionConfig.Tiny,
        VaeConfig = AutoencoderKLConfig.Tiny,
    };

    /// <summary>Same weights for the same <paramref name="seed"/>.</summary>
    public static StableDiffusionModel Create(long seed = 1) =>
        StableDiffusionModel.CreateRandom(CLIPTextConfig.Tiny, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, Tokenizer, seed);
}
