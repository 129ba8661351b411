using DreamBooth.Models.UNet;
using DreamBooth.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>
/// The DreamBooth objective of one batch once its noise and timesteps are drawn, as diffusers' train_dreambooth.py
/// computes it with prior preservation:
/// <code>
/// noisy  = add_noise(latents, noise, t)                  (schedule's ᾱ)
/// pred   = unet(noisy, t, encoder_hidden_states)
/// target = noise (ε) or velocity (v)
/// loss   = mean MSE over instance samples + w · mean MSE over class samples      (fp32)
/// </code>
/// The batch holds its instance samples first, then its class samples (diffusers' <c>torch.chunk(model_pred, 2)</c>);
/// how many of each is known on the host, so the split is a view and nothing here waits for the device (a boolean
/// mask with <c>masked_select</c> would: its output size is read back). A batch with only instance samples gives the
/// instance loss, one with only class samples w · prior.
/// <see cref="DreamBoothTrainer"/>'s step calls this; the parity tests feed it diffusers' inputs.
/// </summary>
public static class DreamBoothObjective
{
    /// <param name="latents">[B, 4, h, w] scaled latents, fp32.</param>
    /// <param name="instances">number of instance samples in the batch, its first ones (known on the host).</param>
    /// <param name="classes">number of class samples in the batch, the rest.</param>
    /// <returns>the loss to back-propagate and its parts (null for a part the batch does not have), fp32 scalars.</returns>
    public static (Tensor Loss, Tensor? Instance, Tensor? Prior) Compute(UNet2DConditionModel unet, NoiseSchedule schedule,
        Tensor latents, Tensor noise, Tensor timesteps, Tensor encoderHiddenStates, int instances, int classes,
        double priorWeight, ScalarType computeDtype)
    {
        if (instances + classes != latents.shape[0] || instances + classes == 0)
            throw new ArgumentException($"{instances} instance + {classes} class samples for a batch of {latents.shape[0]}");
        using var scope = NewDisposeScope();
        var noisyLatents = schedule.AddNoise(latents, noise, timesteps);
        var modelPred = unet.forward(noisyLatents.to(computeDtype), timesteps, encoderHiddenStates.to(computeDtype));
        var target = schedule.Target(latents, noise, timesteps);

        var perSample = (modelPred.to(ScalarType.Float32) - target).pow(2).mean([1L, 2L, 3L]);   // [B]: instances, then class samples
        var instanceLoss = instances > 0 ? perSample.narrow(0, 0, instances).mean() : null;
        var priorLoss = classes > 0 ? perSample.narrow(0, instances, classes).mean() : null;
        var loss = priorLoss is null ? instanceLoss! : instanceLoss is null ? priorWeight * priorLoss : instanceLoss + priorWeight * priorLoss;
        loss.MoveToOuterDisposeScope();
        if (instanceLoss is not null && !ReferenceEquals(instanceLoss, loss)) instanceLoss.MoveToOuterDisposeScope();
        priorLoss?.MoveToOuterDisposeScope();
        return (loss, instanceLoss, priorLoss);
    }
}
