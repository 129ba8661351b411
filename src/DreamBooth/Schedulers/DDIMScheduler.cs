using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Schedulers;

/// <summary>
/// DDIM (Song et al. 2020), deterministic (η = 0), as diffusers' <c>DDIMScheduler</c>: works on the
/// variance-preserving latents directly (no input scaling, initial noise σ = 1). A1111 "DDIM".
/// Default spacing "leading" (with the schedule's steps_offset: SD 1.x 20 steps → 951, 901, …, 1).
/// </summary>
public sealed class DDIMScheduler : ISampler
{
    readonly int[] _timesteps;
    readonly double[] _timestepsD;
    readonly double[] _sigmas;
    int _expectedStep;

    public string Name { get; }
    public NoiseSchedule Schedule { get; }
    public int Steps { get; }
    public TimestepSpacing Spacing { get; }
    public IReadOnlyList<double> Timesteps => _timestepsD;
    public IReadOnlyList<double> Sigmas => _sigmas;
    public double InitNoiseSigma => 1.0;
    /// <summary>ᾱ used after the last step: 1 with set_alpha_to_one, else ᾱ₀.</summary>
    public double FinalAlphaCumprod { get; }

    public DDIMScheduler(NoiseSchedule schedule, int steps, TimestepSpacing? spacing = null, string name = "DDIM")
    {
        DreamBooth.Schedulers.Spacing.Validate(steps, schedule.NumTrainTimesteps);
        Name = name;
        Schedule = schedule;
        Steps = steps;
        Spacing = spacing ?? schedule.TimestepSpacing ?? TimestepSpacing.Leading;
        _timestepsD = DreamBooth.Schedulers.Spacing.Timesteps(Spacing, schedule.NumTrainTimesteps, steps, schedule.StepsOffset, roundLinspace: true);
        _timesteps = _timestepsD.Select(t => (int)t).ToArray();
        foreach (var t in _timesteps)
            if (t < 0 || t >= schedule.NumTrainTimesteps)
                throw new DreamBoothException($"DDIM: timestep {t} from steps_offset {schedule.StepsOffset} and {steps} steps is outside 0..{schedule.NumTrainTimesteps - 1}");
        FinalAlphaCumprod = schedule.SetAlphaToOne ? 1.0 : schedule.AlphasCumprod[0];
        _sigmas = new double[steps + 1];
        for (int i = 0; i < steps; i++) _sigmas[i] = schedule.Sigma(_timesteps[i]);
        _sigmas[steps] = Math.Sqrt((1 - AlphaPrev(steps - 1)) / AlphaPrev(steps - 1));
    }

    public Tensor ScaleModelInput(Tensor sample, int stepIndex) => sample.alias();

    /// <summary>ᾱ of the timestep this step lands on: diffusers uses t − N // steps whatever the spacing.</summary>
    double AlphaPrev(int stepIndex)
    {
        int prev = _timesteps[stepIndex] - Schedule.NumTrainTimesteps / Steps;
        return prev >= 0 ? Schedule.AlphasCumprod[prev] : FinalAlphaCumprod;
    }

    public Tensor Step(Tensor modelOutput, int stepIndex, Tensor sample, IReadOnlyList<Generator>? generators = null)
    {
        CheckOrder(stepIndex);
        using var scope = NewDisposeScope();
        double alphaProdT = Schedule.AlphasCumprod[_timesteps[stepIndex]];
        double alphaProdPrev = AlphaPrev(stepIndex);
        double betaProdT = 1 - alphaProdT;
        var x = sample.to(ScalarType.Float32);
        var output = modelOutput.to(ScalarType.Float32);
        Tensor predX0, predEps;
        if (Schedule.PredictionType == PredictionType.Epsilon)
        {
            predX0 = (x - Math.Sqrt(betaProdT) * output) / Math.Sqrt(alphaProdT);
            predEps = output;
        }
        else
        {
            predX0 = Math.Sqrt(alphaProdT) * x - Math.Sqrt(betaProdT) * output;
            predEps = Math.Sqrt(alphaProdT) * output + Math.Sqrt(betaProdT) * x;
        }
        var prev = Math.Sqrt(alphaProdPrev) * predX0 + Math.Sqrt(1 - alphaProdPrev) * predEps;
        _expectedStep = stepIndex + 1;
        return prev.MoveToOuterDisposeScope();
    }

    public void Reset() => _expectedStep = 0;

    void CheckOrder(int stepIndex)
    {
        if (stepIndex < 0 || stepIndex >= Steps) throw new ArgumentOutOfRangeException(nameof(stepIndex), $"step {stepIndex} of {Steps}");
        if (stepIndex != 0 && stepIndex != _expectedStep)
            throw new InvalidOperationException($"{Name}: step {stepIndex} called after step {_expectedStep - 1}; steps run in order from 0");
    }
}
