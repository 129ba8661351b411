using static TorchSharp.torch;

namespace DreamBooth.Pipelines;

/// <summary>Where and how the pipeline runs the models.</summary>
public sealed record PipelineOptions
{
    /// <summary>Device for the models and latents (null: where the UNet already is). Noise is always drawn on the CPU, then moved.</summary>
    public Device? Device { get; init; }
    /// <summary>dtype of the text encoder and UNet (float16/bfloat16 on a GPU; null: keep theirs). Sampler math stays float32.</summary>
    public ScalarType? Dtype { get; init; }
    /// <summary>dtype of the VAE (null: keep its own; SD's VAE overflows in float16, keep it float32).</summary>
    public ScalarType? VaeDtype { get; init; }
    /// <summary>Decode one image of a batch at a time (same pixels, lower peak memory).</summary>
    public bool VaeSlicing { get; init; } = true;
    /// <summary>Decode in overlapping tiles: true/false, or null = only for images above one megapixel.</summary>
    public bool? VaeTiling { get; init; }
    /// <summary>How many encoded prompts stay cached on the device.</summary>
    public int EmbeddingCacheCapacity { get; init; } = 32;

    public static PipelineOptions Default { get; } = new();
}
