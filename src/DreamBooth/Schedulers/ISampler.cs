using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Schedulers;

/// <summary>
/// One inference sampler (diffusers "scheduler" used for generation) as the pipeline drives it:
/// <code>
/// latents = noise · InitNoiseSigma
/// for i in 0..Steps−1:
///     eps_or_v = unet(ScaleModelInput(latents, i), Timesteps[i], text)
///     latents  = Step(eps_or_v, i, latents, generators)
/// </code>
/// Samplers with history (DPM++ 2M) keep it between calls: steps must be taken in order from 0
/// (step 0 starts a new run). The math runs in float32 whatever the model dtype.
/// </summary>
public interface ISampler
{
    /// <summary>The A1111 name ("DPM++ 2M Karras").</summary>
    string Name { get; }
    NoiseSchedule Schedule { get; }
    int Steps { get; }
    TimestepSpacing Spacing { get; }
    /// <summary>The model timestep at each step (Steps values, descending; fractional for Euler linspace/Karras).</summary>
    IReadOnlyList<double> Timesteps { get; }
    /// <summary>The VE noise level σ of the latents entering each step, then the final level (Steps + 1 values; last 0 except DDIM's ᾱ₀ level).</summary>
    IReadOnlyList<double> Sigmas { get; }
    /// <summary>Standard deviation of the initial noise.</summary>
    double InitNoiseSigma { get; }
    /// <summary>Scales the latents into what the UNet expects at step <paramref name="stepIndex"/>.</summary>
    Tensor ScaleModelInput(Tensor sample, int stepIndex);
    /// <summary>
    /// Moves <paramref name="sample"/> from step <paramref name="stepIndex"/> to the next noise level given the
    /// model output. Ancestral samplers draw fresh noise: one generator per batch row (or one for the batch);
    /// null uses torch's global generator.
    /// </summary>
    Tensor Step(Tensor modelOutput, int stepIndex, Tensor sample, IReadOnlyList<Generator>? generators = null);
    /// <summary>Forgets multistep history (also done implicitly by a step with index 0).</summary>
    void Reset();
}

/// <summary>Gaussian noise drawn on the CPU from per-image generators, then moved: the same seed gives the same noise on any device and batch.</summary>
public static class SamplerNoise
{
    /// <summary>
    /// N(0, 1) of <paramref name="shape"/>: with one generator per row of dimension 0, each row comes from its
    /// own generator (so an image depends only on its seed, not on its batch); with one generator the whole
    /// tensor comes from it; with none, from torch's global generator.
    /// </summary>
    public static Tensor Randn(long[] shape, IReadOnlyList<Generator>? generators, Device? device = null, ScalarType dtype = ScalarType.Float32)
    {
        using var scope = NewDisposeScope();
        Tensor noise;
        if (generators is null || generators.Count == 0)
            noise = randn(shape, ScalarType.Float32, CPU);
        else if (generators.Count == 1)
            noise = randn(shape, ScalarType.Float32, CPU, generator: generators[0]);
        else
        {
            if (generators.Count != shape[0])
                throw new ArgumentException($"{generators.Count} generators for a batch of {shape[0]}: give one per image or one in all");
            var rowShape = shape.ToArray();
            rowShape[0] = 1;
            noise = cat(generators.Select(g => randn(rowShape, ScalarType.Float32, CPU, generator: g)).ToArray(), 0);
        }
        return noise.to(dtype, device ?? CPU).MoveToOuterDisposeScope();
    }
}
