using System.Runtime.CompilerServices;
using DreamBooth.Training;

namespace DreamBooth.Interactive;

/// <summary>
/// The step/epoch/save arithmetic of a config for a number of instance images (one bucket), as the trainer counts it
/// (<see cref="StepPlan"/>): one epoch shows every instance image once; with prior preservation and prior_stepping
/// "alternate" each instance batch is followed by a class batch of its own (the A1111 extension's order), with "joint"
/// the class images ride in the instance batch; an optimizer step is <c>gradient_accumulation_steps</c> batches; the
/// text encoder trains for the first round(text_encoder_step_ratio × optimizer steps) steps; a checkpoint is saved every
/// <c>save_every_epochs</c> epochs plus once at the end.
/// </summary>
public sealed record TrainingArithmetic(TrainingConfig Config, int InstanceImages)
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<TrainingArithmetic>(a => a.ToHtml()));

    public static TrainingArithmetic For(TrainingConfig config, int instanceImages)
    {
        if (instanceImages < 1) throw new DreamBoothException($"instance images: expected at least 1, got {instanceImages}");
        return new TrainingArithmetic(config, instanceImages);
    }

    /// <summary>The library's arithmetic this view shows.</summary>
    public StepPlan Plan => StepPlan.For(Config, InstanceImages);

    public bool Prior => Plan.Prior;
    public int BatchesPerEpoch => Plan.BatchesPerEpoch;
    public int OptimizerStepsPerEpoch => Plan.StepsPerEpoch;
    public int TotalOptimizerSteps => Plan.TotalSteps;
    public int TextEncoderSteps => Plan.TextEncoderSteps;
    public long InstanceImagesSeen => (long)Config.Epochs * InstanceImages;
    /// <summary>Epochs after which a checkpoint is written (the last epoch always is).</summary>
    public IReadOnlyList<int> SaveEpochs => Plan.SaveEpochs;

    public LrSchedule Schedule => LrSchedule.FromConfig(Config, TotalOptimizerSteps);

    /// <summary>UNet and text-encoder learning rate per optimizer step (the text encoder's drops to 0 when it stops training).</summary>
    public PlotlyFigure LrChart(int maxPoints = 400)
    {
        var s = Schedule;
        int n = TotalOptimizerSteps;
        int stride = Math.Max(1, n / maxPoints);
        var steps = new List<double>();
        for (int i = 0; i < n; i += stride) steps.Add(i);
        if (steps[^1] != n - 1) steps.Add(n - 1);
        var unet = steps.Select(x => Config.TrainUnet ? s.LearningRate((int)x, Config.LearningRate) : 0).ToList();
        var te = steps.Select(x => x < TextEncoderSteps ? s.LearningRate((int)x, Config.TextEncoderLearningRate) : 0).ToList();
        return Charts.Lines($"learning rate: {Config.LrScheduler}, {n} optimizer steps", "optimizer step", "learning rate",
        [
            new Charts.Series("UNet", steps, unet, Color: "#1f77b4", Width: 3),
            new Charts.Series($"text encoder (first {TextEncoderSteps} steps)", steps, te, Color: "#ff7f0e", Dash: "dash"),
        ]);
    }

    string Batches => !Plan.Alternating
        ? $"{BatchesPerEpoch} = ⌈{InstanceImages} / batch {Config.BatchSize}⌉" + (Prior ? " (each instance image with its class image in the same batch: prior_stepping joint)" : "")
        : $"{BatchesPerEpoch} = 2 × ⌈{InstanceImages} / batch {Config.BatchSize}⌉ (an instance batch, then its class batch: prior_stepping alternate)";

    public override string ToString() =>
        $"{InstanceImages} instance image(s) × {Config.Epochs} epochs = {InstanceImagesSeen} instance steps; {BatchesPerEpoch} batches an epoch ({Plan.SamplesPerStep} a step); " +
        $"{TotalOptimizerSteps} optimizer steps; text encoder for {TextEncoderSteps}; saves after epochs {string.Join(", ", SaveEpochs)}";

    public string ToHtml() => Html.KeyValueTable(
    [
        ("instance images", InstanceImages),
        ("epochs (each instance image once)", Config.Epochs),
        ("batches per epoch", Batches),
        ("a step trains on", Plan.SamplesPerStep),
        ("optimizer steps per epoch", $"{OptimizerStepsPerEpoch} = ⌈{BatchesPerEpoch} / accumulation {Config.GradientAccumulationSteps}⌉"),
        ("optimizer steps in all", $"{TotalOptimizerSteps} = {Config.Epochs} × {OptimizerStepsPerEpoch}"),
        ("text encoder trains for", $"{TextEncoderSteps} steps = round({Config.TextEncoderStepRatio} × {TotalOptimizerSteps}), then frozen"),
        ("images seen", Prior ? $"{InstanceImagesSeen} instance + {InstanceImagesSeen} class" : $"{InstanceImagesSeen} instance"),
        ("checkpoints saved", $"{SaveEpochs.Count}, after epoch(s) {string.Join(", ", SaveEpochs)}"),
    ], "Step / epoch / save arithmetic");
}
