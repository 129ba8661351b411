using DreamBooth.Checkpoints;
using DreamBooth.Pipelines;

namespace DreamBooth.Training;

/// <summary>
/// Before training: tops up each concept's class folder to class_images_per_instance × instance images with
/// <see cref="ClassImageGenerator"/> (the concept's class prompt, negative prompt, CFG and steps; class_batch_size
/// images per batch; max_resolution square; seeds from the run's seed), unless the concept's
/// generate_class_images is false. Images already there count; only the shortfall is generated.
/// </summary>
public static class ClassImagePreparation
{
    /// <summary>The request for concept <paramref name="index"/>, or null when it needs no generation (no prior, generation off).</summary>
    public static ClassImageRequest? RequestFor(TrainingConfig config, int index)
    {
        var c = config.Concepts[index];
        if (!c.HasPrior || !c.GenerateClassImages) return null;
        int instances = TrainingConfig.ImageFiles(c.InstanceDir).Count();
        return new ClassImageRequest
        {
            ClassDirectory = c.ClassDir,
            Needed = ClassImageRequest.NeededFor(instances, c.ClassImagesPerInstance),
            ClassPrompt = c.ClassPrompt,
            NegativePrompt = c.ClassNegativePrompt,
            Steps = c.ClassSteps,
            CfgScale = c.ClassGuidanceScale,
            BatchSize = config.ClassBatchSize,
            Width = config.MaxResolution,
            Height = config.MaxResolution,
            ClipSkip = config.ClipSkip,
            Seed = Math.Abs(config.Seed + 1_000_003L * index) % (GenerationRequest.MaxRandomSeed + 1),
        };
    }

    /// <summary>Generates the missing class images of every concept with <paramref name="model"/>; returns one report per concept that asked for generation.</summary>
    public static IReadOnlyList<ClassImageReport> Run(TrainingConfig config, StableDiffusionModel model,
        IProgress<TrainingEvent>? progress = null, CancellationToken cancellationToken = default)
    {
        var reports = new List<ClassImageReport>();
        Txt2ImgPipeline? pipeline = null;
        try
        {
            for (int i = 0; i < config.Concepts.Count; i++)
            {
                var request = RequestFor(config, i);
                if (request is null) continue;
                if (ClassImageGenerator.Scan(request.ClassDirectory).readable.Count >= request.Needed) continue;
                pipeline ??= new Txt2ImgPipeline(model);
                var report = new ClassImageGenerator(pipeline).Run(request, progress is null ? null : new Relay(p =>
                {
                    if (p.LastFile is not null)
                        progress.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Path = p.LastFile, Message = $"class image {p.Generated}/{p.ToGenerate}: {p.LastFile}" });
                }), cancellationToken);
                reports.Add(report);
                progress?.Report(new TrainingEvent { Kind = TrainingEventKind.Message, Message = report.ToString() });
            }
        }
        finally
        {
            pipeline?.Dispose();
        }
        return reports;
    }

    sealed class Relay(Action<ClassImageProgress> a) : IProgress<ClassImageProgress>
    {
        public void Report(ClassImageProgress value) => a(value);
    }
}
