using DreamBooth.Schedulers;

namespace DreamBooth.Tests.Schedulers;

/// <summary>
/// Inference timesteps and σ against diffusers' published formulas, recomputed here independently in
/// double precision, plus literal anchors. Against diffusers' own classes: Parity/SamplingParityTests.
/// </summary>
public class SamplerTimestepTests
{
    static readonly NoiseSchedule Sd15 = NoiseSchedule.StableDiffusion15;

    static double[] TrainSigmas() => Enumerable.Range(0, 1000).Select(t => Math.Sqrt((1 - Sd15.AlphasCumprod[t]) / Sd15.AlphasCumprod[t])).ToArray();

    static double LinearInterp(double[] values, double x)
    {
        int lo = Math.Min((int)x, values.Length - 2);
        return values[lo] + (values[lo + 1] - values[lo]) * (x - lo);
    }

    static double RoundEven(double x) => Math.Round(x, MidpointRounding.ToEven);

    [Theory]
    [InlineData(20)]
    [InlineData(40)]
    public void DdimLeadingWithStepsOffset(int steps)
    {
        var sampler = SamplerFactory.Create("DDIM", Sd15, steps);
        Assert.Equal(TimestepSpacing.Leading, sampler.Spacing);
        var expected = Enumerable.Range(0, steps).Select(i => (double)((steps - 1 - i) * (1000 / steps) + 1)).ToArray();
        Assert.Equal(expected, sampler.Timesteps);
        Assert.Equal(1.0, sampler.InitNoiseSigma);
        for (int i = 0; i < steps; i++) Assert.Equal(Sd15.Sigma((int)expected[i]), sampler.Sigmas[i], 1e-12);
    }

    [Fact]
    public void DdimLiteralAnchors()
    {
        Assert.Equal(new double[] { 951, 901, 851, 801, 751, 701, 651, 601, 551, 501, 451, 401, 351, 301, 251, 201, 151, 101, 51, 1 },
            SamplerFactory.Create("DDIM", Sd15, 20).Timesteps);
        var t40 = SamplerFactory.Create("DDIM", Sd15, 40).Timesteps;
        Assert.Equal(976, t40[0]);
        Assert.Equal(951, t40[1]);
        Assert.Equal(1, t40[^1]);
        // trailing: 999, 949, …, 49
        var trailing = SamplerFactory.Create("DDIM", Sd15, 20, TimestepSpacing.Trailing).Timesteps;
        Assert.Equal(Enumerable.Range(0, 20).Select(i => 999.0 - 50 * i), trailing);
        // linspace: rounded linspace(0, 999, n) reversed
        var linspace = SamplerFactory.Create("DDIM", Sd15, 40, TimestepSpacing.Linspace).Timesteps;
        Assert.Equal(Enumerable.Range(0, 40).Select(i => RoundEven(999.0 * (39 - i) / 39)), linspace);
    }

    [Theory]
    [InlineData("Euler", 20)]
    [InlineData("Euler", 40)]
    [InlineData("Euler a", 20)]
    [InlineData("Euler a", 40)]
    public void EulerLinspaceSigmasAreInterpolatedTrainingSigmas(string name, int steps)
    {
        var sampler = SamplerFactory.Create(name, Sd15, steps);
        Assert.Equal(TimestepSpacing.Linspace, sampler.Spacing);
        var train = TrainSigmas();
        Assert.Equal(steps, sampler.Timesteps.Count);
        Assert.Equal(steps + 1, sampler.Sigmas.Count);
        for (int i = 0; i < steps; i++)
        {
            double t = 999.0 * (steps - 1 - i) / (steps - 1);
            Assert.Equal(t, sampler.Timesteps[i], 1e-9);
            Assert.Equal(LinearInterp(train, t), sampler.Sigmas[i], 1e-9);
        }
        Assert.Equal(0.0, sampler.Sigmas[steps]);
        Assert.Equal(14.6146, sampler.Sigmas[0], 1e-4);
        Assert.Equal(14.6146, sampler.InitNoiseSigma, 1e-4); // linspace: σmax, not sqrt(σmax² + 1)
        Assert.Equal(0.029167, sampler.Sigmas[steps - 1], 1e-6);
    }

    [Fact]
    public void EulerLeadingUsesOffsetAndLargerInitSigma()
    {
        var sampler = SamplerFactory.Create("Euler", Sd15, 20, TimestepSpacing.Leading);
        Assert.Equal(951, sampler.Timesteps[0]);
        Assert.Equal(1, sampler.Timesteps[^1]);
        Assert.Equal(Math.Sqrt(Sd15.Sigma(951) * Sd15.Sigma(951) + 1), sampler.InitNoiseSigma, 1e-12);
        var trailing = SamplerFactory.Create("Euler", Sd15, 40, TimestepSpacing.Trailing);
        Assert.Equal(Enumerable.Range(0, 40).Select(i => 999.0 - 25 * i), trailing.Timesteps);
    }

    [Theory]
    [InlineData(20)]
    [InlineData(40)]
    public void DpmSolverLinspaceDropsTheLastOfStepsPlusOnePoints(int steps)
    {
        var sampler = SamplerFactory.Create("DPM++ 2M", Sd15, steps);
        var train = TrainSigmas();
        for (int i = 0; i < steps; i++)
        {
            double t = RoundEven(999.0 * (steps - i) / steps);
            Assert.Equal(t, sampler.Timesteps[i]);
            Assert.Equal(train[(int)t], sampler.Sigmas[i], 1e-12);
        }
        Assert.Equal(0.0, sampler.Sigmas[steps]);
        Assert.Equal(1.0, sampler.InitNoiseSigma);
    }

    [Fact]
    public void DpmSolverLiteralAnchors20()
    {
        Assert.Equal(new double[] { 999, 949, 899, 849, 799, 749, 699, 649, 599, 549, 500, 450, 400, 350, 300, 250, 200, 150, 100, 50 },
            SamplerFactory.Create("DPM++ 2M", Sd15, 20).Timesteps);
    }

    [Theory]
    [InlineData(20)]
    [InlineData(40)]
    public void DpmSolverKarrasSigmasAndTimesteps(int steps)
    {
        var sampler = SamplerFactory.Create("DPM++ 2M Karras", Sd15, steps);
        var train = TrainSigmas();
        double sMin = train[0], sMax = train[999], rho = 7;
        var logTrain = train.Select(x => Math.Log(x)).ToArray();
        for (int i = 0; i < steps; i++)
        {
            double ramp = (double)i / (steps - 1);
            double sigma = Math.Pow(Math.Pow(sMax, 1 / rho) + ramp * (Math.Pow(sMin, 1 / rho) - Math.Pow(sMax, 1 / rho)), rho);
            Assert.Equal(sigma, sampler.Sigmas[i], sigma * 1e-12);
            // invert log σ(t), piecewise linear in t
            double ls = Math.Log(sigma);
            int j = 0;
            while (j < 998 && logTrain[j + 1] <= ls) j++;
            double t = Math.Clamp(j + (ls - logTrain[j]) / (logTrain[j + 1] - logTrain[j]), 0, 999);
            Assert.Equal(RoundEven(t), sampler.Timesteps[i]);
        }
        Assert.Equal(14.6146, sampler.Sigmas[0], 1e-4);
        Assert.Equal(0.0292, sampler.Sigmas[steps - 1], 1e-4);
        Assert.Equal(999, sampler.Timesteps[0]);
        Assert.Equal(0, sampler.Timesteps[steps - 1]);
        Assert.Equal(0.0, sampler.Sigmas[steps]);
        for (int i = 1; i < steps; i++) Assert.True(sampler.Timesteps[i] < sampler.Timesteps[i - 1], "Karras timesteps strictly decrease");
    }

    [Fact]
    public void UnknownSamplerListsValidNames()
    {
        var e = Assert.Throws<DreamBoothException>(() => SamplerFactory.Create("LMS Karras", Sd15, 20));
        Assert.Contains("LMS Karras", e.Message);
        foreach (var n in SamplerFactory.Names) Assert.Contains($"\"{n}\"", e.Message);
        Assert.Equal("Euler a", SamplerFactory.Create(" euler A ", Sd15, 20).Name);
    }

    [Fact]
    public void StepCountOutOfRangeIsAUserError()
    {
        Assert.Throws<DreamBoothException>(() => SamplerFactory.Create("Euler", Sd15, 0));
        Assert.Throws<DreamBoothException>(() => SamplerFactory.Create("DDIM", Sd15, 1001));
    }
}
