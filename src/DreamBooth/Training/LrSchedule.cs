namespace DreamBooth.Training;

/// <summary>
/// Learning-rate schedules with diffusers' <c>get_scheduler</c> formulas: the LR of a group at optimizer
/// step <c>s</c> is its base LR × <see cref="Factor"/>(s). Steps count optimizer steps from 0.
/// </summary>
public sealed class LrSchedule
{
    public string Name { get; }
    public int WarmupSteps { get; }
    public int TotalSteps { get; }
    public int NumCycles { get; }
    public double Power { get; }
    public double LrEnd { get; }

    public LrSchedule(string name, int warmupSteps, int totalSteps, int numCycles = 1, double power = 1.0, double lrEnd = 0.0)
    {
        if (!TrainingConfig.LrSchedulers.Contains(name))
            throw new DreamBoothException($"lr_scheduler = \"{name}\" is not one of: {string.Join(", ", TrainingConfig.LrSchedulers)}");
        if (warmupSteps < 0) throw new DreamBoothException($"lr_warmup_steps = {warmupSteps} must be ≥ 0");
        if (totalSteps < 1) throw new DreamBoothException($"total training steps = {totalSteps} must be ≥ 1");
        Name = name; WarmupSteps = warmupSteps; TotalSteps = totalSteps; NumCycles = numCycles; Power = power; LrEnd = lrEnd;
    }

    public static LrSchedule FromConfig(TrainingConfig c, int totalOptimizerSteps) =>
        new(c.LrScheduler, c.LrWarmupSteps, totalOptimizerSteps, c.LrNumCycles, c.LrPower, c.LrEnd);

    /// <summary>Multiplier of <paramref name="baseLr"/> at <paramref name="step"/> (the polynomial schedule needs the base LR).</summary>
    public double Factor(int step, double baseLr = 1.0)
    {
        int w = WarmupSteps, n = TotalSteps;
        double warm = (double)step / Math.Max(1, w);
        switch (Name)
        {
            case "constant":
                return 1.0;
            case "constant_with_warmup":
                return step < w ? warm : 1.0;
            case "linear":
                if (step < w) return warm;
                return Math.Max(0.0, (double)(n - step) / Math.Max(1, n - w));
            case "cosine":
            {
                if (step < w) return warm;
                double progress = (double)(step - w) / Math.Max(1, n - w);
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * 0.5 * 2.0 * progress)));
            }
            case "cosine_with_restarts":
            {
                if (step < w) return warm;
                double progress = (double)(step - w) / Math.Max(1, n - w);
                if (progress >= 1.0) return 0.0;
                return Math.Max(0.0, 0.5 * (1.0 + Math.Cos(Math.PI * ((NumCycles * progress) % 1.0))));
            }
            case "polynomial":
            {
                if (baseLr <= 0) return 0.0;
                if (step < w) return warm;
                if (step > n) return LrEnd / baseLr;
                double range = baseLr - LrEnd;
                double remaining = 1.0 - (double)(step - w) / Math.Max(1, n - w);
                return (range * Math.Pow(remaining, Power) + LrEnd) / baseLr;
            }
            default:
                throw new InvalidOperationException(Name);
        }
    }

    public double LearningRate(int step, double baseLr) => baseLr * Factor(step, baseLr);
}
