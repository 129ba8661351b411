using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;

namespace DreamBooth.Toy;

/// <summary>
/// The toy text-to-image model: the real SD1.x classes with small configs. <see cref="Default"/> is the embedded
/// model (32×32 pictures → 4×8×8 latents: sized for a 2-core CPU); <see cref="Micro"/> runs the same code paths in a test.
/// </summary>
public sealed record ToyModelConfig(CLIPTextConfig TextEncoder, UNet2DConditionConfig UNet, AutoencoderKLConfig Vae, int ImageSize)
{
    public int LatentSize => ImageSize / Vae.DownsampleFactor;

    public static ToyModelConfig Default { get; } = new(
        new CLIPTextConfig { HiddenSize = 64, IntermediateSize = 128, NumHiddenLayers = 2, NumAttentionHeads = 4, ProjectionDim = 64 },
        new UNet2DConditionConfig
        {
            SampleSize = 8,
            BlockOutChannels = [32, 64],
            LayersPerBlock = 1,
            CrossAttentionDim = 64,
            AttentionHeadDim = 4,
            NormNumGroups = 16,
            DownBlockTypes = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
            UpBlockTypes = ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        },
        new AutoencoderKLConfig
        {
            BlockOutChannels = [16, 32, 32],
            DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
            UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
            LayersPerBlock = 1,
            LatentChannels = 4,
            NormNumGroups = 8,
            SampleSize = 32,
        },
        32);

    /// <summary>The smallest configs of the same classes: 32×32 pictures, 2× VAE, tiny UNet and text encoder.</summary>
    public static ToyModelConfig Micro { get; } = new(
        CLIPTextConfig.Tiny,
        UNet2DConditionConfig.Tiny with { SampleSize = 8 },
        AutoencoderKLConfig.Tiny with { SampleSize = 16 },
        16);
}
