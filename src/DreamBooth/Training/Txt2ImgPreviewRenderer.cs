using System.Globalization;
using DreamBooth.Checkpoints;
using DreamBooth.Pipelines;

namespace DreamBooth.Training;

/// <summary>
/// Previews during training through the one sampling path (<see cref="Txt2ImgPipeline"/>): prompt k of the
/// preview prompts is rendered with seed <c>seed + k</c> (the same seeds every epoch, so epochs compare), and
/// saved as <c>{outputDir}/epoch_{epoch:0000}/preview_{k:00}.png</c> with its A1111 infotext. The trainer calls
/// it with the weights it is training (as the A1111 extension draws its previews; the EMA weights only with
/// preview_ema), put into fp32 modules.
/// </summary>
public sealed class Txt2ImgPreviewRenderer : IPreviewRenderer
{
    public int Width { get; }
    public int Height { get; }
    public int Steps { get; }
    public double CfgScale { get; }
    public string Sampler { get; }
    public string NegativePrompt { get; }
    public int ClipSkip { get; }

    public Txt2ImgPreviewRenderer(int width, int height, int steps = 20, double cfgScale = 7.5, string? sampler = null, string negativePrompt = "", int clipSkip = 1)
    {
        Width = width;
        Height = height;
        Steps = steps;
        CfgScale = cfgScale;
        Sampler = sampler ?? DreamBooth.Schedulers.SamplerFactory.Default;
        NegativePrompt = negativePrompt;
        ClipSkip = clipSkip;
        Request("").Validate(1);
    }

    /// <summary>The renderer for a run without its data: max_resolution square, the run's clip skip.</summary>
    public static Txt2ImgPreviewRenderer For(TrainingConfig config, int steps = 20, double cfgScale = 7.5) =>
        new(config.MaxResolution, config.MaxResolution, steps, cfgScale, clipSkip: config.ClipSkip);

    /// <summary>
    /// The renderer for a run: the size of its most common instance bucket (768x1024 for the recipe's photos; an SD1.5
    /// model draws malformed people at 1024x1024), the run's clip skip.
    /// </summary>
    public static Txt2ImgPreviewRenderer For(TrainingConfig config, TrainingData data, int steps = 20, double cfgScale = 7.5)
    {
        var bucket = data.Instances.GroupBy(i => (i.Width, i.Height)).OrderByDescending(g => g.Count()).ThenBy(g => g.Key.Width).First().Key;
        return new(bucket.Width, bucket.Height, steps, cfgScale, clipSkip: config.ClipSkip);
    }

    GenerationRequest Request(string prompt) => new()
    {
        Prompt = prompt, NegativePrompt = NegativePrompt, Steps = Steps, CfgScale = CfgScale, Sampler = Sampler,
        Width = Width, Height = Height, ClipSkip = ClipSkip, Count = 1, BatchSize = 1, Seed = 0,
    };

    public IReadOnlyList<string> Render(StableDiffusionModel model, IReadOnlyList<string> prompts, long seed, string outputDir, int epoch)
    {
        string dir = Path.Combine(outputDir, "epoch_" + epoch.ToString("0000", CultureInfo.InvariantCulture));
        Directory.CreateDirectory(dir);
        var files = new List<string>();
        using var pipeline = new Txt2ImgPipeline(model);   // fresh: the text encoder may have changed since the last preview
        for (int k = 0; k < prompts.Count; k++)
        {
            var images = pipeline.GenerateBatch(Request(prompts[k]), [seed + k]);
            try
            {
                string png = Path.Combine(dir, $"preview_{k:00}.png");
                images[0].SavePng(png);
                files.Add(png);
            }
            finally
            {
                foreach (var i in images) i.Dispose();
            }
        }
        return files;
    }
}
