using DreamBooth.Schedulers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Schedulers;

public class NoiseScheduleTests
{
    const string Sd15SchedulerConfig = """
        {
          "_class_name": "PNDMScheduler",
          "_diffusers_version": "0.6.0",
          "beta_end": 0.012,
          "beta_schedule": "scaled_linear",
          "beta_start": 0.00085,
          "num_train_timesteps": 1000,
          "set_alpha_to_one": false,
          "skip_prk_steps": true,
          "steps_offset": 1,
          "trained_betas": null,
          "clip_sample": false
        }
        """;

    /// <summary>Straightforward double-precision ᾱ for a β schedule (independent of the product code).</summary>
    static double[] ReferenceAlphasCumprod(bool scaled, double start = 0.00085, double end = 0.012, int n = 1000)
    {
        var result = new double[n];
        double prod = 1;
        for (int i = 0; i < n; i++)
        {
            double beta = scaled
                ? Math.Pow(Math.Sqrt(start) + (Math.Sqrt(end) - Math.Sqrt(start)) * i / (n - 1), 2)
                : start + (end - start) * i / (n - 1);
            prod *= 1 - beta;
            result[i] = prod;
        }
        return result;
    }

    [Fact]
    public void Sd15ConfigParsesToScaledLinearEpsilonWithOffset()
    {
        var s = NoiseSchedule.FromConfigJson(Sd15SchedulerConfig);
        Assert.Equal(1000, s.NumTrainTimesteps);
        Assert.Equal("scaled_linear", s.BetaSchedule);
        Assert.Equal(PredictionType.Epsilon, s.PredictionType);
        Assert.Equal(1, s.StepsOffset);
        Assert.False(s.SetAlphaToOne);
        Assert.Null(s.TimestepSpacing);
        var reference = ReferenceAlphasCumprod(scaled: true);
        for (int t = 0; t < 1000; t++) Assert.Equal(reference[t], s.AlphasCumprod[t], 1e-12);
        // literal anchors (double precision, as LDM / k-diffusion compute them)
        Assert.Equal(0.00085, s.Betas[0], 1e-15);
        Assert.Equal(0.012, s.Betas[999], 1e-15);
        Assert.Equal(0.0046601, s.AlphasCumprod[999], 1e-7);
        Assert.Equal(14.6146, s.Sigma(999), 1e-4);
        Assert.Equal(0.029167, s.Sigma(0), 1e-6);
    }

    [Fact]
    public void LinearScheduleAndVPredictionFromJson()
    {
        var s = NoiseSchedule.FromConfigJson("""{"beta_schedule":"linear","beta_start":0.00085,"beta_end":0.012,"prediction_type":"v_prediction","timestep_spacing":"trailing"}""");
        Assert.Equal(PredictionType.VPrediction, s.PredictionType);
        Assert.Equal(TimestepSpacing.Trailing, s.TimestepSpacing);
        var reference = ReferenceAlphasCumprod(scaled: false);
        for (int t = 0; t < 1000; t += 37) Assert.Equal(reference[t], s.AlphasCumprod[t], 1e-12);
        Assert.Equal(0.00157896, s.AlphasCumprod[999], 1e-7);
    }

    [Fact]
    public void NullConfigIsSd15()
    {
        var s = NoiseSchedule.FromConfigJson(null);
        Assert.Equal(1, s.StepsOffset);
        Assert.Equal(0.0046601, s.AlphasCumprod[999], 1e-7);
    }

    [Theory]
    [InlineData("""{"beta_schedule":"cosine"}""", "beta_schedule")]
    [InlineData("""{"prediction_type":"sample"}""", "prediction_type")]
    [InlineData("""{"timestep_spacing":"middle"}""", "timestep_spacing")]
    [InlineData("""{"num_train_timesteps":"1000"}""", "num_train_timesteps")]
    [InlineData("""not json""", "JSON")]
    public void BadConfigNamesTheKey(string json, string key)
    {
        var e = Assert.Throws<DreamBoothException>(() => NoiseSchedule.FromConfigJson(json));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void ZeroTerminalSnrRescaleEndsAtZero()
    {
        var s = new NoiseSchedule(rescaleBetasZeroSnr: true);
        Assert.Equal(0, s.AlphasCumprod[999], 1e-12);
        Assert.Equal(NoiseSchedule.StableDiffusion15.AlphasCumprod[0], s.AlphasCumprod[0], 1e-12);
    }

    [Fact]
    public void AddNoiseVelocityAndSnrMatchTheFormulas()
    {
        var s = NoiseSchedule.StableDiffusion15;
        var g = new Generator(7);
        var x0 = randn([3, 4, 2, 2], generator: g);
        var noise = randn([3, 4, 2, 2], generator: g);
        var t = tensor(new long[] { 0, 500, 999 });
        var noisy = s.AddNoise(x0, noise, t);
        var v = s.GetVelocity(x0, noise, t);
        var snr = s.Snr(t);
        long[] ts = [0, 500, 999];
        for (int b = 0; b < 3; b++)
        {
            double a = s.AlphasCumprod[(int)ts[b]];
            var expectedNoisy = x0[b] * Math.Sqrt(a) + noise[b] * Math.Sqrt(1 - a);
            var expectedV = noise[b] * Math.Sqrt(a) - x0[b] * Math.Sqrt(1 - a);
            Assert.True(allclose(noisy[b], expectedNoisy, 1e-5, 1e-6));
            Assert.True(allclose(v[b], expectedV, 1e-5, 1e-6));
            Assert.Equal(a / (1 - a), snr[b].item<float>(), a / (1 - a) * 1e-5);
        }
        Assert.Equal(ScalarType.Float32, snr.dtype);
        // the v target of a v-prediction schedule is the velocity; an epsilon schedule's target is the noise
        Assert.True(allclose(s.WithPredictionType(PredictionType.VPrediction).Target(x0, noise, t), v));
        Assert.True(s.Target(x0, noise, t).eq(noise).all().item<bool>());
        // velocity and noisy sample recover x0: x0 = sqrt(a)·x_t − sqrt(1−a)·v
        var a500 = s.AlphasCumprod[500];
        Assert.True(allclose(noisy[1] * Math.Sqrt(a500) - v[1] * Math.Sqrt(1 - a500), x0[1], 1e-4, 1e-5));
    }
}
