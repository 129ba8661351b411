using System.Runtime.CompilerServices;
using DreamBooth.Training;

namespace DreamBooth.Interactive;

/// <summary>
/// The step/epoch/save arithmetic of a config for a number of instance images, as the recipe counts:
/// one epoch shows every instance image once (each paired with a class image when prior preservation is on),
/// a step is one batch, an optimizer step is <c>gradient_accumulation_steps</c> batches, the text encoder
/// trains for the first round(text_encoder_step_ratio × optimizer steps) steps, and a checkpoint is saved every
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

    public bool Prior => Config.Concepts.Any(c => c.HasPrior);
    public int BatchesPerEpoch => (InstanceImages + Config.BatchSize - 1) / Config.BatchSize;
    public int OptimizerStepsPerEpoch => Math.Max(1, (BatchesPerEpoch + Config.GradientAccumulationSteps - 1) / Config.GradientAccumulationSteps);
    public int TotalOptimizerSteps => checked(Config.Epochs * OptimizerStepsPerEpoch);
    public int TextEncoderSteps => (int)Math.Round(Config.TextEncoderStepRatio * TotalOptimizerSteps, MidpointRounding.AwayFromZero);
    public long InstanceImagesSeen => (long)Config.Epochs * InstanceImages;
    /// <summary>Epochs after which a checkpoint is written (the last epoch always is).</summary>
    public IReadOnlyList<int> SaveEpochs
    {
        get
        {
            var e = new List<int>();
            if (Config.SaveEveryEpochs > 0)
                for (int k = Config.SaveEveryEpochs; k <= Config.Epochs; k += Config.SaveEveryEpochs) e.Add(k);
            if (e.Count == 0 || e[^1] != Config.Epochs) e.Add(Config.Epochs);
            return e;
        }
    }

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

    public override string ToString() =>
        $"{InstanceImages} instance image(s) × {Config.Epochs} epochs = {InstanceImagesSeen} instance steps; {TotalOptimizerSteps} optimizer steps; " +
        $"text encoder for {TextEncoderSteps}; saves after epochs {string.Join(", ", SaveEpochs)}";

    public string ToHtml() => Html.KeyValueTable(
    [
        ("instance images", InstanceImages),
        ("epochs (steps per image)", Config.Epochs),
        ("batches per epoch", $"{BatchesPerEpoch} = ⌈{InstanceImages} / batch {Config.BatchSize}⌉" + (Prior ? " (each instance image paired with a class image)" : "")),
        ("optimizer steps per epoch", $"{OptimizerStepsPerEpoch} = ⌈{BatchesPerEpoch} / accumulation {Config.GradientAccumulationSteps}⌉"),
        ("optimizer steps in all", $"{TotalOptimizerSteps} = {Config.Epochs} × {OptimizerStepsPerEpoch}"),
        ("text encoder trains for", $"{TextEncoderSteps} steps = round({Config.TextEncoderStepRatio} × {TotalOptimizerSteps}), then frozen"),
        ("images seen", Prior ? $"{InstanceImagesSeen} instance + {InstanceImagesSeen} class" : $"{InstanceImagesSeen} instance"),
        ("checkpoints saved", $"{SaveEpochs.Count}, after epoch(s) {string.Join(", ", SaveEpochs)}"),
    ], "Step / epoch / save arithmetic");
}
