namespace DreamBooth.Training;

public enum TrainingEventKind { Started, Step, TextEncoderFrozen, EpochEnd, Saved, Preview, Cancelled, Completed, Message }

/// <summary>
/// What the trainer reports (through <see cref="IProgress{T}"/>): notebooks and the CLI render the same events.
/// Step events carry the losses, the LR of each parameter group, grad norms, timings and memory.
/// </summary>
public sealed record TrainingEvent
{
    public TrainingEventKind Kind { get; init; }
    /// <summary>Optimizer steps done so far.</summary>
    public int Step { get; init; }
    public int TotalSteps { get; init; }
    /// <summary>Epoch being trained (0-based), or the epoch just finished for EpochEnd/Saved.</summary>
    public int Epoch { get; init; }
    public double Loss { get; init; }
    public double InstanceLoss { get; init; }
    /// <summary>NaN when the batch held no class image.</summary>
    public double PriorLoss { get; init; }
    public double PriorLossWeight { get; init; }
    public double LrUnet { get; init; }
    public double LrTextEncoder { get; init; }
    public double GradNorm { get; init; }
    public double TextEncoderGradNorm { get; init; }
    public double StepSeconds { get; init; }
    public double ImagesPerSecond { get; init; }
    /// <summary>Process working set, or GPU memory in use when on CUDA (bytes).</summary>
    public long MemoryBytes { get; init; }
    /// <summary>Preview events with a preview scorer: the mean face likeness distance of the previews (null: none had a face).</summary>
    public double? Likeness { get; init; }
    public string? Path { get; init; }
    public string? Message { get; init; }

    public const string CsvHeader = "step,epoch,loss,instance_loss,prior_loss,prior_loss_weight,lr_unet,lr_text_encoder,grad_norm,text_encoder_grad_norm,step_seconds,images_per_second,memory_bytes";

    public string ToCsv() => string.Join(",",
        Step.ToString(System.Globalization.CultureInfo.InvariantCulture),
        Epoch.ToString(System.Globalization.CultureInfo.InvariantCulture),
        F(Loss), F(InstanceLoss), F(PriorLoss), F(PriorLossWeight), F(LrUnet), F(LrTextEncoder), F(GradNorm), F(TextEncoderGradNorm),
        F(StepSeconds), F(ImagesPerSecond), MemoryBytes.ToString(System.Globalization.CultureInfo.InvariantCulture));

    static string F(double v) => double.IsNaN(v) ? "" : v.ToString("R", System.Globalization.CultureInfo.InvariantCulture);
}
