using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Schedulers;

/// <summary>
/// Ancestral Euler, as diffusers' <c>EulerAncestralDiscreteScheduler</c> (k-diffusion
/// <c>sample_euler_ancestral</c>, η = 1): each step goes deterministically down to σ_down and adds
/// fresh noise of σ_up, with σ_down² + σ_up² = σ_next². A1111 "Euler a". Default spacing "linspace".
/// </summary>
public sealed class EulerAncestralDiscreteScheduler : ISampler
{
    readonly double[] _timesteps;
    readonly double[] _sigmas;
    int _expectedStep;

    public string Name { get; }
    public NoiseSchedule Schedule { get; }
    public int Steps { get; }
    public TimestepSpacing Spacing { get; }
    public IReadOnlyList<double> Timesteps => _timesteps;
    public IReadOnlyList<double> Sigmas => _sigmas;
    public double InitNoiseSigma { get; }

    public EulerAncestralDiscreteScheduler(NoiseSchedule schedule, int steps, TimestepSpacing? spacing = null, string name = "Euler a")
    {
        Name = name;
        Schedule = schedule;
        Steps = steps;
        Spacing = spacing ?? schedule.TimestepSpacing ?? TimestepSpacing.Linspace;
        (_timesteps, _sigmas) = KDiffusionSigmas.Compute(schedule, steps, Spacing, karras: false);
        double max = _sigmas.Take(steps).Max();
        InitNoiseSigma = Spacing is TimestepSpacing.Linspace or TimestepSpacing.Trailing ? max : Math.Sqrt(max * max + 1);
    }

    public Tensor ScaleModelInput(Tensor sample, int stepIndex)
    {
        double sigma = _sigmas[stepIndex];
        return sample / Math.Sqrt(sigma * sigma + 1);
    }

    /// <summary>(σ_down, σ_up) for a step from σ to σ_next.</summary>
    public static (double down, double up) AncestralSigmas(double sigmaFrom, double sigmaTo)
    {
        double up = Math.Sqrt(sigmaTo * sigmaTo * (sigmaFrom * sigmaFrom - sigmaTo * sigmaTo) / (sigmaFrom * sigmaFrom));
        double down = Math.Sqrt(sigmaTo * sigmaTo - up * up);
        return (down, up);
    }

    public Tensor Step(Tensor modelOutput, int stepIndex, Tensor sample, IReadOnlyList<Generator>? generators = null)
    {
        KDiffusionSigmas.CheckOrder(Name, stepIndex, Steps, _expectedStep);
        using var scope = NewDisposeScope();
        double sigma = _sigmas[stepIndex], sigmaNext = _sigmas[stepIndex + 1];
        var x = sample.to(ScalarType.Float32);
        var predX0 = KDiffusionSigmas.PredictX0(Schedule.PredictionType, modelOutput.to(ScalarType.Float32), x, sigma);
        var (sigmaDown, sigmaUp) = AncestralSigmas(sigma, sigmaNext);
        var derivative = (x - predX0) / sigma;
        var prev = x + derivative * (sigmaDown - sigma);
        if (sigmaUp > 0)
            prev = prev + SamplerNoise.Randn(x.shape, generators, x.device) * sigmaUp;
        _expectedStep = stepIndex + 1;
        return prev.MoveToOuterDisposeScope();
    }

    public void Reset() => _expectedStep = 0;
}
