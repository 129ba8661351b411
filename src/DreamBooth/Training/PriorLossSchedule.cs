namespace DreamBooth.Training;

/// <summary>
/// Weight of the prior (class) loss: constant <c>prior_loss_weight</c>, or with <c>scale_prior_loss</c> a
/// linear decay from <c>prior_loss_weight</c> at epoch 0 to <c>prior_loss_weight_min</c> at
/// <c>prior_loss_target_epochs</c>, held at the minimum afterwards.
/// </summary>
public static class PriorLossSchedule
{
    public static double Weight(TrainingConfig c, double epoch) =>
        Weight(c.PriorLossWeight, c.ScalePriorLoss, c.PriorLossWeightMin, c.PriorLossTargetEpochs, epoch);

    public static double Weight(double weight, bool scale, double min, int targetEpochs, double epoch)
    {
        if (!scale) return weight;
        double f = Math.Clamp(epoch / Math.Max(1, targetEpochs), 0.0, 1.0);
        return weight + (min - weight) * f;
    }
}
