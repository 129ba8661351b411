using DreamBooth.Pipelines;
using DreamBooth.Schedulers;
using SixLabors.ImageSharp.PixelFormats;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Parity;

/// <summary>
/// Samplers and txt2img against diffusers' schedulers and StableDiffusionPipeline. We compute β, ᾱ and σ in float64
/// (LDM's make_beta_schedule and k-diffusion do); diffusers computes them in float32 (torch.linspace, cumprod). Our
/// ᾱ rounded to fp32 is what fp32 math sees, so σ differs from diffusers' by the fp32 cumprod's drift: the bounds
/// below follow from it (measured in docs/sampling.md).
/// </summary>
public class SamplingParityTests(TinySdModel fx, ITestOutputHelper log) : IClassFixture<TinySdModel>
{
    static readonly string[] Samplers = ["DDIM", "Euler", "Euler a", "DPM++ 2M", "DPM++ 2M Karras"];

    /// <summary>
    /// Relative error of diffusers' fp32 ᾱ against float64: 1000 fp32 products drift by ~n·2^-24 (measured 2.4e-6 at
    /// t = 999); σ = sqrt((1 − ᾱ)/ᾱ) carries half of it, plus fp32 rounding of the interpolation.
    /// </summary>
    const double ScheduleBound = 1e-5;

    static NoiseSchedule Schedule => NoiseSchedule.FromConfigJson(File.ReadAllText(Path.Combine(ParityFile.TinySd, "scheduler", "scheduler_config.json")));

    [Fact]
    public void Betas_and_alphas_cumprod_match_diffusers_float32_to_its_rounding()
    {
        using var scope = NewDisposeScope();
        using var f = ParityFile.Open("schedulers.safetensors");
        var schedule = Schedule;
        var betas = tensor(schedule.Betas.ToArray(), ScalarType.Float64);
        var ac = tensor(schedule.AlphasCumprod.ToArray(), ScalarType.Float64);
        Parity.AssertClose(log, "betas (ours float64 vs diffusers float32)", betas, f.Get("betas"), 1e-6);
        var diff = Parity.AssertClose(log, "alphas_cumprod (ours float64 vs diffusers float32)", ac, f.Get("alphas_cumprod"), 1e-5);
        // relative to each value (ᾱ999 = 0.0047): the fp32 cumprod drifts, ours is the float64 product
        var perValue = ((ac - f.Get("alphas_cumprod").to_type(ScalarType.Float64)).abs() / ac).max().item<double>();
        log.WriteLine($"PARITY | alphas_cumprod per-value relative | {perValue:0.00e+00} | {perValue:0.00e+00} | bound 1e-5");
        Assert.True(perValue < 1e-5, $"ᾱ per-value relative difference {perValue}");
        Assert.True(diff.MaxAbs > 0, "diffusers' fp32 ᾱ is not the float64 one (the comparison would not show the precision)");
    }

    [Theory]
    [InlineData("DDIM", 20)]
    [InlineData("DDIM", 40)]
    [InlineData("Euler", 20)]
    [InlineData("Euler", 40)]
    [InlineData("Euler a", 20)]
    [InlineData("Euler a", 40)]
    [InlineData("DPM++ 2M", 20)]
    [InlineData("DPM++ 2M", 40)]
    [InlineData("DPM++ 2M Karras", 20)]
    [InlineData("DPM++ 2M Karras", 40)]
    public void Timesteps_sigmas_and_init_noise_sigma_match_diffusers(string name, int steps)
    {
        using var scope = NewDisposeScope();
        using var f = ParityFile.Open("schedulers.safetensors");
        var sampler = SamplerFactory.Create(name, Schedule, steps);
        var referenceTimesteps = f.Get($"{name}.{steps}.timesteps");
        var ours = tensor(sampler.Timesteps.ToArray(), ScalarType.Float64).to_type(referenceTimesteps.dtype);
        // integer timesteps (DDIM, DPM++) are equal; Euler's fractional linspace ones are equal once rounded to fp32
        Parity.AssertEqual($"{name} {steps} timesteps", ours, referenceTimesteps);
        if (f.Contains($"{name}.{steps}.sigmas"))
            Parity.AssertClose(log, $"{name} {steps} steps sigmas", tensor(sampler.Sigmas.ToArray(), ScalarType.Float64), f.Get($"{name}.{steps}.sigmas"), ScheduleBound);
        double init = f.Get($"{name}.{steps}.init_noise_sigma").item<float>();
        Assert.True(Math.Abs(sampler.InitNoiseSigma - init) <= ScheduleBound * init, $"{name}: init_noise_sigma {sampler.InitNoiseSigma} vs {init}");
    }

    /// <summary>
    /// Whole loops, 20 steps, CFG 7.5, from the same initial noise, through our UNet and sampler vs diffusers' UNet and
    /// scheduler (Euler a with per-image generators seeded as diffusers' were, after the initial draw). A random UNet
    /// under CFG 7.5 amplifies every per-step difference (the final latents reach |x| ≈ 90), so the bound is the
    /// per-step fp32 and ᾱ differences compounded over 20 steps (measured up to 3.7e-5 relative, DPM++ 2M).
    /// </summary>
    [Theory]
    [InlineData("DDIM")]
    [InlineData("Euler")]
    [InlineData("Euler a")]
    [InlineData("DPM++ 2M")]
    [InlineData("DPM++ 2M Karras")]
    public void Sampling_loop_with_cfg_7_5_ends_on_diffusers_latents(string name)
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var f = ParityFile.Open("schedulers.safetensors");
        var seeds = f.Meta("seeds").EnumerateArray().Select(e => e.GetInt64()).ToArray();
        int steps = f.Meta("steps").GetInt32();
        double cfg = f.Meta("cfg").GetDouble();
        var context = f.Get("loop.context");
        var noise = f.Get("loop.noise");
        var generators = seeds.Select(s => new Generator((ulong)s)).ToList();
        try
        {
            // the pipeline's initial draw (and proof that our generators give diffusers' noise)
            Parity.AssertEqual("initial noise", SamplerNoise.Randn(noise.shape, generators), noise);
            var sampler = SamplerFactory.Create(name, Schedule, steps);
            var latents = noise * sampler.InitNoiseSigma;
            for (int i = 0; i < steps; i++)
            {
                var input = sampler.ScaleModelInput(latents, i);
                var t = full([input.shape[0] * 2], sampler.Timesteps[i], ScalarType.Float32);
                var eps = fx.Model.UNet.forward(cat([input, input], 0), t, context).chunk(2, 0);
                latents = sampler.Step(eps[0] + cfg * (eps[1] - eps[0]), i, latents, generators);
            }
            Parity.AssertClose(log, $"{name} loop, 20 steps, CFG 7.5", latents, f.Get($"loop.{name}.final"), 3e-4);
        }
        finally
        {
            foreach (var g in generators) g.Dispose();
        }
    }

    /// <summary>
    /// Txt2ImgPipeline from prompt to PNG bytes against StableDiffusionPipeline(output_type="np") → uint8, same seeds
    /// (one generator per image), tokenizer, text encoder, sampler, UNet, CFG and VAE of the fixture.
    /// </summary>
    [Theory]
    [InlineData("dpmpp2m_karras")]
    [InlineData("euler_a")]
    [InlineData("ddim")]
    public void Txt2img_pixels_match_StableDiffusionPipeline(string run)
    {
        using var scope = NewDisposeScope();
        using var f = ParityFile.Open("pipeline.safetensors");
        var meta = f.Meta("runs").GetProperty(run);
        var request = new GenerationRequest
        {
            Prompt = meta.GetProperty("prompt").GetString()!,
            NegativePrompt = meta.GetProperty("negative").GetString()!,
            Sampler = meta.GetProperty("sampler").GetString()!,
            Steps = meta.GetProperty("steps").GetInt32(),
            CfgScale = meta.GetProperty("cfg").GetDouble(),
            Width = meta.GetProperty("width").GetInt32(),
            Height = meta.GetProperty("height").GetInt32(),
        };
        var seeds = meta.GetProperty("seeds").EnumerateArray().Select(e => e.GetInt64()).ToList();
        using var pipeline = new Txt2ImgPipeline(fx.Model);
        var images = pipeline.GenerateBatch(request, seeds);
        try
        {
            var reference = f.Get($"{run}.uint8");                           // [B, H, W, 3]
            var ours = zeros(reference.shape, ScalarType.Byte);
            for (int k = 0; k < images.Count; k++)
            {
                var pixels = new byte[request.Width * request.Height * 3];
                images[k].Image.CopyPixelDataTo(pixels);
                ours[k].copy_(tensor(pixels, [request.Height, request.Width, 3]));
            }
            var d = (ours.to_type(ScalarType.Int32) - reference.to_type(ScalarType.Int32)).abs();
            int maxLevels = d.max().item<int>();
            double differing = d.gt(0).to_type(ScalarType.Float64).mean().item<double>();
            log.WriteLine($"PARITY | txt2img {run} ({request.Sampler}, {images.Count}x{request.Width}x{request.Height}) uint8 | {maxLevels} levels | {differing:P2} of values differ | bound 2 levels, 2%");
            Assert.True(maxLevels <= 2, $"{run}: pixels differ by up to {maxLevels} levels");
            Assert.True(differing <= 0.02, $"{run}: {differing:P2} of pixel values differ");
        }
        finally
        {
            foreach (var image in images) image.Dispose();
        }
    }
}
