using System.Runtime.InteropServices;

namespace DreamBooth.Training;

/// <summary>What to do after an out-of-memory failure of a training step.</summary>
public enum OomAction { EnableGradientCheckpointing, HalveBatch, GiveUp }

/// <summary>
/// The CUDA out-of-memory back-off: first turn on gradient checkpointing and retry the same step (same seeds,
/// so the run stays reproducible), then halve the batch, then give up with a clear message.
/// TorchSharp surfaces a CUDA OOM as an <see cref="ExternalException"/> whose message says "out of memory".
/// </summary>
public static class OomBackoff
{
    public static bool IsOutOfMemory(Exception e) =>
        e is ExternalException or OutOfMemoryException
        && e.Message.Contains("out of memory", StringComparison.OrdinalIgnoreCase);

    public static OomAction Next(bool gradientCheckpointing, int batchSize) =>
        !gradientCheckpointing ? OomAction.EnableGradientCheckpointing
        : batchSize > 1 ? OomAction.HalveBatch
        : OomAction.GiveUp;

    /// <summary>The line the trainer reports (Message event) or throws (GiveUp).</summary>
    public static string Describe(OomAction action, int step, int batchSize) => action switch
    {
        OomAction.EnableGradientCheckpointing => $"out of memory at step {step}: enabled gradient checkpointing, retrying the step",
        OomAction.HalveBatch => $"out of memory at step {step} with gradient checkpointing on: set batch_size to {Math.Max(1, batchSize / 2)} (and gradient_accumulation_steps ×2 to keep the effective batch) and resume",
        _ => $"out of memory at step {step} with gradient checkpointing on and batch_size 1: lower max_resolution, use bf16, ema_device = \"cpu\" or adamw8bit",
    };
}
