namespace DreamBooth.Training;

/// <summary>
/// The step/epoch arithmetic of a run, as the trainer counts it (the trainer, the CLI and notebook 02 all use this):
/// an epoch shows every instance image once, in batches of batch_size from one bucket each. With prior preservation
/// and prior_stepping "alternate" (the A1111 extension's sampler) each instance batch is followed by a batch of its
/// class images, its own step, so an epoch has twice the batches; with "joint" (diffusers') the class images ride
/// in the instance batch. An optimizer step is gradient_accumulation_steps batches; the text encoder trains for the
/// first round(text_encoder_step_ratio × optimizer steps); a checkpoint is saved every save_every_epochs epochs and
/// at the end.
/// </summary>
public sealed record StepPlan
{
    /// <summary>Instance images per bucket (one entry per bucket).</summary>
    public required IReadOnlyList<int> InstancesPerBucket { get; init; }
    public required bool Prior { get; init; }
    public required int BatchSize { get; init; }
    public required int GradientAccumulationSteps { get; init; }
    public required int Epochs { get; init; }
    public required int SaveEveryEpochs { get; init; }
    public required string PriorStepping { get; init; }
    public required bool TrainUnet { get; init; }
    public required double TextEncoderStepRatio { get; init; }
    public required double TextEncoderLearningRate { get; init; }

    public static StepPlan For(TrainingConfig config, IReadOnlyList<int> instancesPerBucket, bool prior) => new()
    {
        InstancesPerBucket = instancesPerBucket,
        Prior = prior,
        BatchSize = config.BatchSize,
        GradientAccumulationSteps = config.GradientAccumulationSteps,
        Epochs = config.Epochs,
        SaveEveryEpochs = config.SaveEveryEpochs,
        PriorStepping = config.PriorStepping,
        TrainUnet = config.TrainUnet,
        TextEncoderStepRatio = config.TextEncoderStepRatio,
        TextEncoderLearningRate = config.TextEncoderLearningRate,
    };

    /// <summary>For a count of instance images in one bucket; prior preservation when any concept has a class folder.</summary>
    public static StepPlan For(TrainingConfig config, int instanceImages)
    {
        if (instanceImages < 1) throw new DreamBoothException($"instance images: expected at least 1, got {instanceImages}");
        return For(config, [instanceImages], config.Concepts.Any(c => c.HasPrior));
    }

    public int InstanceImages => InstancesPerBucket.Sum();
    /// <summary>Class steps are separate batches (alternate stepping with prior preservation).</summary>
    public bool Alternating => Prior && PriorStepping == "alternate";
    public int InstanceBatchesPerEpoch => InstancesPerBucket.Sum(n => (n + BatchSize - 1) / BatchSize);
    public int BatchesPerEpoch => InstanceBatchesPerEpoch * (Alternating ? 2 : 1);
    public int StepsPerEpoch => Math.Max(1, (BatchesPerEpoch + GradientAccumulationSteps - 1) / GradientAccumulationSteps);
    public int TotalSteps => checked(Epochs * StepsPerEpoch);

    /// <summary>Optimizer steps the text encoder trains (0 when its LR is 0; every step when the UNet does not train).</summary>
    public int TextEncoderSteps =>
        TextEncoderLearningRate <= 0 ? 0
        : TrainUnet ? (int)Math.Round(TextEncoderStepRatio * TotalSteps, MidpointRounding.AwayFromZero)
        : TotalSteps;

    /// <summary>Epochs after which a checkpoint is written (the last epoch always is).</summary>
    public IReadOnlyList<int> SaveEpochs
    {
        get
        {
            var e = new List<int>();
            if (SaveEveryEpochs > 0)
                for (int k = SaveEveryEpochs; k <= Epochs; k += SaveEveryEpochs) e.Add(k);
            if (e.Count == 0 || e[^1] != Epochs) e.Add(Epochs);
            return e;
        }
    }

    /// <summary>Instance (and class) images each optimizer step trains on, as text: "1 instance or 1 class image".</summary>
    public string SamplesPerStep =>
        !Prior ? $"{BatchSize * GradientAccumulationSteps} instance image(s)"
        : Alternating ? (GradientAccumulationSteps == 1 ? $"{BatchSize} instance or {BatchSize} class image(s), alternating" : $"{GradientAccumulationSteps} alternating batches of {BatchSize} instance or class image(s)")
        : $"{BatchSize * GradientAccumulationSteps} instance + {BatchSize * GradientAccumulationSteps} class image(s) in one batch";
}
