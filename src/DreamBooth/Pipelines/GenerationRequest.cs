using System.Globalization;
using DreamBooth.Schedulers;

namespace DreamBooth.Pipelines;

/// <summary>What to generate (A1111's txt2img fields). Image k of the request gets seed <see cref="Seed"/> + k.</summary>
public sealed record GenerationRequest
{
    public string Prompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";
    public int Steps { get; init; } = 40;
    public double CfgScale { get; init; } = 7.5;
    public string Sampler { get; init; } = SamplerFactory.Default;
    /// <summary>Seed of the first image; −1 picks a random one (reported in each image's <see cref="GenerationInfo"/>).</summary>
    public long Seed { get; init; } = -1;
    public int Width { get; init; } = 512;
    public int Height { get; init; } = 512;
    /// <summary>Number of images in all.</summary>
    public int Count { get; init; } = 1;
    /// <summary>Images denoised together (the last batch may be smaller).</summary>
    public int BatchSize { get; init; } = 1;
    /// <summary>1 = the text encoder's last layer; 2 = the one before it (through final_layer_norm), …</summary>
    public int ClipSkip { get; init; } = 1;

    /// <summary>Largest seed A1111 produces for −1 (seeds are 32-bit there).</summary>
    public const long MaxRandomSeed = uint.MaxValue;

    /// <summary>Checks every field; throws <see cref="DreamBoothException"/> naming the setting.</summary>
    public void Validate(int pixelMultiple = 8)
    {
        if (Prompt is null) throw new DreamBoothException("prompt: must not be null");
        if (Steps < 1 || Steps > 1000) throw new DreamBoothException($"steps: expected 1..1000, got {Steps}");
        if (!(CfgScale >= 0 && CfgScale <= 100)) throw new DreamBoothException($"cfg scale: expected 0..100, got {CfgScale.ToString(CultureInfo.InvariantCulture)}");
        SamplerFactory.Canonical(Sampler);
        if (Seed < -1) throw new DreamBoothException($"seed: expected −1 (random) or a seed >= 0, got {Seed}");
        if (Width < pixelMultiple || Width % pixelMultiple != 0 || Width > 8192) throw new DreamBoothException($"width: expected a multiple of {pixelMultiple} up to 8192, got {Width}");
        if (Height < pixelMultiple || Height % pixelMultiple != 0 || Height > 8192) throw new DreamBoothException($"height: expected a multiple of {pixelMultiple} up to 8192, got {Height}");
        if (Count < 1) throw new DreamBoothException($"count: expected at least 1 image, got {Count}");
        if (BatchSize < 1) throw new DreamBoothException($"batch size: expected at least 1, got {BatchSize}");
        if (ClipSkip < 1 || ClipSkip > 12) throw new DreamBoothException($"clip skip: expected 1..12, got {ClipSkip}");
    }

    /// <summary>Parses "WxH" ("768x1024").</summary>
    public static (int width, int height) ParseSize(string size)
    {
        var parts = (size ?? "").Trim().ToLowerInvariant().Split('x');
        if (parts.Length == 2 && int.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var w)
            && int.TryParse(parts[1], NumberStyles.None, CultureInfo.InvariantCulture, out var h))
            return (w, h);
        throw new DreamBoothException($"size: expected WIDTHxHEIGHT such as 768x1024, got '{size}'");
    }
}

/// <summary>One denoising step done (Step counts from 1), with the batch it belongs to.</summary>
public sealed record SamplingProgress(
    int Step,
    int Steps,
    int Batch,
    int BatchCount,
    int ImagesDone,
    int ImagesTotal,
    TimeSpan Elapsed,
    double SecondsPerStep);
