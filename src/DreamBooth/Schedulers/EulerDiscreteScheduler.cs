using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Schedulers;

/// <summary>
/// Euler's method on the probability-flow ODE in σ (Karras et al. 2022, Algorithm 2 without churn),
/// as diffusers' <c>EulerDiscreteScheduler</c>: σ interpolated linearly at the spaced timesteps (or
/// Karras σ with <c>useKarrasSigmas</c>), then 0. The UNet sees x / sqrt(σ² + 1). A1111 "Euler".
/// Default spacing "linspace" (σmax = 14.6146 for SD 1.x).
/// </summary>
public sealed class EulerDiscreteScheduler : ISampler
{
    readonly double[] _timesteps;
    readonly double[] _sigmas;
    int _expectedStep;

    public string Name { get; }
    public NoiseSchedule Schedule { get; }
    public int Steps { get; }
    public TimestepSpacing Spacing { get; }
    public bool UseKarrasSigmas { get; }
    public IReadOnlyList<double> Timesteps => _timesteps;
    public IReadOnlyList<double> Sigmas => _sigmas;
    /// <summary>σmax for linspace/trailing spacing, sqrt(σmax² + 1) for leading (as diffusers).</summary>
    public double InitNoiseSigma { get; }

    public EulerDiscreteScheduler(NoiseSchedule schedule, int steps, TimestepSpacing? spacing = null, bool useKarrasSigmas = false, string name = "Euler")
    {
        Name = name;
        Schedule = schedule;
        Steps = steps;
        Spacing = spacing ?? schedule.TimestepSpacing ?? TimestepSpacing.Linspace;
        UseKarrasSigmas = useKarrasSigmas;
        (_timesteps, _sigmas) = KDiffusionSigmas.Compute(schedule, steps, Spacing, useKarrasSigmas);
        double max = _sigmas.Take(steps).Max();
        InitNoiseSigma = Spacing is TimestepSpacing.Linspace or TimestepSpacing.Trailing ? max : Math.Sqrt(max * max + 1);
    }

    public Tensor ScaleModelInput(Tensor sample, int stepIndex)
    {
        double sigma = _sigmas[stepIndex];
        return sample / Math.Sqrt(sigma * sigma + 1);
    }

    public Tensor Step(Tensor modelOutput, int stepIndex, Tensor sample, IReadOnlyList<Generator>? generators = null)
    {
        KDiffusionSigmas.CheckOrder(Name, stepIndex, Steps, _expectedStep);
        using var scope = NewDisposeScope();
        double sigma = _sigmas[stepIndex], sigmaNext = _sigmas[stepIndex + 1];
        var x = sample.to(ScalarType.Float32);
        var predX0 = KDiffusionSigmas.PredictX0(Schedule.PredictionType, modelOutput.to(ScalarType.Float32), x, sigma);
        var derivative = (x - predX0) / sigma;
        var prev = x + derivative * (sigmaNext - sigma);
        _expectedStep = stepIndex + 1;
        return prev.MoveToOuterDisposeScope();
    }

    public void Reset() => _expectedStep = 0;
}

/// <summary>The σ-space (k-diffusion style) timesteps and sigmas shared by the Euler schedulers.</summary>
internal static class KDiffusionSigmas
{
    /// <summary>Training σ of each timestep; ᾱ = 0 (zero terminal SNR) is replaced by 2⁻²⁴ as diffusers does.</summary>
    public static double[] TrainSigmas(NoiseSchedule schedule) =>
        SchedulerMath.SigmasFromAlphasCumprod(schedule.AlphasCumprod.Select(a => a > 0 ? a : Math.Pow(2, -24)).ToArray());

    public static (double[] timesteps, double[] sigmas) Compute(NoiseSchedule schedule, int steps, TimestepSpacing spacing, bool karras)
    {
        DreamBooth.Schedulers.Spacing.Validate(steps, schedule.NumTrainTimesteps);
        var trainSigmas = TrainSigmas(schedule);
        var timesteps = DreamBooth.Schedulers.Spacing.Timesteps(spacing, schedule.NumTrainTimesteps, steps, schedule.StepsOffset, roundLinspace: false);
        foreach (var t in timesteps)
            if (t < 0 || t > schedule.NumTrainTimesteps - 1)
                throw new DreamBoothException($"timestep {t} from steps_offset {schedule.StepsOffset} and {steps} steps is outside 0..{schedule.NumTrainTimesteps - 1}");
        var sigmas = timesteps.Select(t => SchedulerMath.InterpOnIndex(t, trainSigmas)).ToArray();
        if (karras)
        {
            var logSigmas = trainSigmas.Select(s => Math.Log(s)).ToArray();
            sigmas = SchedulerMath.KarrasSigmas(sigmas[^1], sigmas[0], steps);
            timesteps = sigmas.Select(s => SchedulerMath.SigmaToT(s, logSigmas)).ToArray();
        }
        return (timesteps, [.. sigmas, 0.0]);
    }

    /// <summary>Denoised estimate from the model output at VE noise level σ (x = x0 + σ·ε).</summary>
    public static Tensor PredictX0(PredictionType prediction, Tensor modelOutput, Tensor sample, double sigma) =>
        prediction == PredictionType.Epsilon
            ? sample - sigma * modelOutput
            : modelOutput * (-sigma / Math.Sqrt(sigma * sigma + 1)) + sample / (sigma * sigma + 1);

    public static void CheckOrder(string name, int stepIndex, int steps, int expected)
    {
        if (stepIndex < 0 || stepIndex >= steps) throw new ArgumentOutOfRangeException(nameof(stepIndex), $"step {stepIndex} of {steps}");
        if (stepIndex != 0 && stepIndex != expected)
            throw new InvalidOperationException($"{name}: step {stepIndex} called after step {expected - 1}; steps run in order from 0");
    }
}
