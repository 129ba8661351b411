using TorchSharp;

namespace DreamBooth.Training;

/// <summary>
/// Step scalars as TensorBoard event files in <c>{output}/tensorboard/</c> (TorchSharp's SummaryWriter):
/// loss/total, loss/instance, loss/prior, loss/prior_weight, lr/unet, lr/text_encoder, grad_norm/unet,
/// grad_norm/text_encoder, perf/step_seconds, perf/images_per_second. `tensorboard --logdir output/tensorboard`.
/// </summary>
public sealed class TensorBoardLog
{
    readonly TorchSharp.Modules.SummaryWriter _writer;

    public string Directory { get; }

    public TensorBoardLog(string directory)
    {
        Directory = directory;
        System.IO.Directory.CreateDirectory(directory);
        _writer = torch.utils.tensorboard.SummaryWriter(directory);
    }

    /// <summary>Writes the scalars of a Step event (NaN ones, such as prior loss without class images, are skipped).</summary>
    public void Write(TrainingEvent e)
    {
        if (e.Kind != TrainingEventKind.Step) return;
        Scalar("loss/total", e.Loss, e.Step);
        Scalar("loss/instance", e.InstanceLoss, e.Step);
        Scalar("loss/prior", e.PriorLoss, e.Step);
        Scalar("loss/prior_weight", e.PriorLossWeight, e.Step);
        Scalar("lr/unet", e.LrUnet, e.Step);
        Scalar("lr/text_encoder", e.LrTextEncoder, e.Step);
        Scalar("grad_norm/unet", e.GradNorm, e.Step);
        Scalar("grad_norm/text_encoder", e.TextEncoderGradNorm, e.Step);
        Scalar("perf/step_seconds", e.StepSeconds, e.Step);
        Scalar("perf/images_per_second", e.ImagesPerSecond, e.Step);
    }

    void Scalar(string tag, double value, int step)
    {
        if (double.IsFinite(value)) _writer.add_scalar(tag, (float)value, step);
    }
}
