using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Schedulers;

/// <summary>
/// DPM-Solver++(2M) (Lu et al. 2022), data prediction, midpoint second-order update, as diffusers'
/// <c>DPMSolverMultistepScheduler</c> with its defaults (solver_order 2, algorithm dpmsolver++,
/// final σ = 0 reached by a first-order step). Works on variance-preserving latents (no input scaling,
/// initial noise σ = 1). A1111 "DPM++ 2M", and "DPM++ 2M Karras" with Karras σ (ρ = 7) from σmin to σmax
/// of the training schedule. Default spacing "linspace" over steps + 1 points, the last dropped.
/// </summary>
public sealed class DPMSolverMultistepScheduler : ISampler
{
    readonly double[] _timesteps;
    readonly double[] _sigmas;
    Tensor? _previousX0;
    int _expectedStep;

    public string Name { get; }
    public NoiseSchedule Schedule { get; }
    public int Steps { get; }
    public TimestepSpacing Spacing { get; }
    public bool UseKarrasSigmas { get; }
    public IReadOnlyList<double> Timesteps => _timesteps;
    public IReadOnlyList<double> Sigmas => _sigmas;
    public double InitNoiseSigma => 1.0;

    public DPMSolverMultistepScheduler(NoiseSchedule schedule, int steps, TimestepSpacing? spacing = null, bool useKarrasSigmas = false, string? name = null)
    {
        DreamBooth.Schedulers.Spacing.Validate(steps, schedule.NumTrainTimesteps);
        Name = name ?? (useKarrasSigmas ? "DPM++ 2M Karras" : "DPM++ 2M");
        Schedule = schedule;
        Steps = steps;
        Spacing = spacing ?? schedule.TimestepSpacing ?? TimestepSpacing.Linspace;
        UseKarrasSigmas = useKarrasSigmas;
        int n = schedule.NumTrainTimesteps;
        double[] timesteps;
        switch (Spacing)
        {
            case TimestepSpacing.Linspace:
                timesteps = SchedulerMath.Linspace(0, n - 1, steps + 1).Select(SchedulerMath.Round).Reverse().Take(steps).ToArray();
                break;
            case TimestepSpacing.Leading:
                int ratio = n / (steps + 1);
                timesteps = Enumerable.Range(0, steps + 1).Select(i => SchedulerMath.Round((double)i * ratio)).Reverse().Take(steps)
                    .Select(t => t + schedule.StepsOffset).ToArray();
                break;
            default:
                timesteps = SchedulerMath.Arange(n, 0, -(double)n / steps).Select(t => SchedulerMath.Round(t) - 1).ToArray();
                break;
        }
        foreach (var t in timesteps)
            if (t < 0 || t > n - 1)
                throw new DreamBoothException($"{Name}: timestep {t} from steps_offset {schedule.StepsOffset} and {steps} steps is outside 0..{n - 1}");
        var trainSigmas = KDiffusionSigmas.TrainSigmas(schedule);
        double[] sigmas;
        if (useKarrasSigmas)
        {
            var logSigmas = trainSigmas.Select(s => Math.Log(s)).ToArray();
            sigmas = SchedulerMath.KarrasSigmas(trainSigmas[0], trainSigmas[^1], steps);
            timesteps = sigmas.Select(s => SchedulerMath.Round(SchedulerMath.SigmaToT(s, logSigmas))).ToArray();
        }
        else
        {
            sigmas = timesteps.Select(t => SchedulerMath.InterpOnIndex(t, trainSigmas)).ToArray();
        }
        _timesteps = timesteps;
        _sigmas = [.. sigmas, 0.0];
    }

    public Tensor ScaleModelInput(Tensor sample, int stepIndex) => sample.alias();

    static (double alpha, double sigma) VariancePreserving(double sigmaVe)
    {
        double alpha = 1 / Math.Sqrt(sigmaVe * sigmaVe + 1);
        return (alpha, sigmaVe * alpha);
    }

    public Tensor Step(Tensor modelOutput, int stepIndex, Tensor sample, IReadOnlyList<Generator>? generators = null)
    {
        KDiffusionSigmas.CheckOrder(Name, stepIndex, Steps, _expectedStep);
        if (stepIndex == 0) Reset();
        using var scope = NewDisposeScope();
        var x = sample.to(ScalarType.Float32);
        var output = modelOutput.to(ScalarType.Float32);
        double sigmaS0 = _sigmas[stepIndex], sigmaT = _sigmas[stepIndex + 1];
        var (alphaS0, vpSigmaS0) = VariancePreserving(sigmaS0);
        // data prediction x0 from the model output at the current noise level
        var x0 = Schedule.PredictionType == PredictionType.Epsilon
            ? (x - vpSigmaS0 * output) / alphaS0
            : alphaS0 * x - vpSigmaS0 * output;

        Tensor prev;
        if (sigmaT == 0)
        {
            prev = x0.alias(); // first-order step to σ = 0 lands on the data prediction
        }
        else
        {
            var (alphaT, vpSigmaT) = VariancePreserving(sigmaT);
            double lambdaT = Math.Log(alphaT) - Math.Log(vpSigmaT);
            double lambdaS0 = Math.Log(alphaS0) - Math.Log(vpSigmaS0);
            double h = lambdaT - lambdaS0;
            double expm = Math.Exp(-h) - 1;
            if (_previousX0 is null)
            {
                prev = (vpSigmaT / vpSigmaS0) * x - (alphaT * expm) * x0;
            }
            else
            {
                var (alphaS1, vpSigmaS1) = VariancePreserving(_sigmas[stepIndex - 1]);
                double lambdaS1 = Math.Log(alphaS1) - Math.Log(vpSigmaS1);
                double r0 = (lambdaS0 - lambdaS1) / h;
                var d1 = (x0 - _previousX0) * (1 / r0);
                prev = (vpSigmaT / vpSigmaS0) * x - (alphaT * expm) * x0 - (0.5 * alphaT * expm) * d1;
            }
        }
        _previousX0?.Dispose();
        _previousX0 = x0.DetachFromDisposeScope();
        _expectedStep = stepIndex + 1;
        if (_expectedStep == Steps) Reset(keepOrder: true);
        return prev.MoveToOuterDisposeScope();
    }

    public void Reset() => Reset(keepOrder: false);

    void Reset(bool keepOrder)
    {
        _previousX0?.Dispose();
        _previousX0 = null;
        if (!keepOrder) _expectedStep = 0;
    }
}
