using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Pipelines;

/// <summary>One generated picture and the parameters that reproduce it.</summary>
public sealed class GeneratedImage : IDisposable
{
    public Image<Rgb24> Image { get; }
    public GenerationInfo Info { get; }

    public GeneratedImage(Image<Rgb24> image, GenerationInfo info)
    {
        Image = image;
        Info = info;
    }

    /// <summary>Saves as PNG with the A1111 <c>parameters</c> chunk, atomically.</summary>
    public void SavePng(string path) => PngInfotext.Save(Image, path, Info);

    public void Dispose() => Image.Dispose();
}

/// <summary>All images of a request and how long they took.</summary>
public sealed class GenerationResult : IDisposable
{
    public IReadOnlyList<GeneratedImage> Images { get; }
    public TimeSpan Elapsed { get; }
    /// <summary>Mean seconds per denoising step (one step = one UNet call over the whole batch, both CFG halves).</summary>
    public double SecondsPerStep { get; }

    public GenerationResult(IReadOnlyList<GeneratedImage> images, TimeSpan elapsed, double secondsPerStep)
    {
        Images = images;
        Elapsed = elapsed;
        SecondsPerStep = secondsPerStep;
    }

    public void Dispose()
    {
        foreach (var image in Images) image.Dispose();
    }
}
