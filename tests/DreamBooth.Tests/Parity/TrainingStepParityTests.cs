using System.Globalization;
using DreamBooth.Schedulers;
using DreamBooth.Text;
using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Parity;

/// <summary>
/// One DreamBooth step against a reference written with diffusers' modules and PyTorch autograd (train_step.safetensors):
/// same weights, latents, noise, timesteps and token ids; loss = instance + 0.75 × prior; every gradient; the recipe's
/// clipping (UNet max_grad_norm 1 as torch.nn.utils.clip_grad_norm_, text encoder none); one Lion step
/// (lucidrains' lion-pytorch 0.2.3, decoupled weight decay, from a preset non-zero momentum so β1 and β2 both act) on
/// the fp32 masters; the EMA update (diffusers' EMAModel at a fixed decay). The step runs through the pieces the
/// trainer runs: <see cref="PromptEncoder"/>, <see cref="DreamBoothObjective"/> (what <c>TrainStep</c> calls),
/// <see cref="MasterWeights"/>, <see cref="GradientClipping"/>, <see cref="Lion"/> and <see cref="EmaModel"/>, in
/// <c>OptimizerStep</c>'s order. fp32 on the CPU.
/// </summary>
public class TrainingStepParityTests(ITestOutputHelper log)
{
    /// <summary>
    /// The loss and gradients: two fp32 forward/backward passes through the same network; our ᾱ is float64 (diffusers'
    /// float32), so the noisy latents already differ by ~1e-7. Measured: 1.2e-5 relative to the largest gradient.
    /// </summary>
    const double GradientBound = 5e-5;

    [Fact]
    public void Unet_step_with_frozen_text_encoder_matches_diffusers_autograd_lion_and_ema() => Step(trainTextEncoder: false);

    [Fact]
    public void Unet_and_text_encoder_step_matches_diffusers_autograd_lion_and_ema() => Step(trainTextEncoder: true);

    void Step(bool trainTextEncoder)
    {
        using var scope = NewDisposeScope();
        using var model = TinySdModel.Load();
        using var f = ParityFile.Open("train_step.safetensors");
        var schedule = NoiseSchedule.FromConfigJson(File.ReadAllText(Path.Combine(ParityFile.TinySd, "scheduler", "scheduler_config.json")));
        var unet = model.UNet;
        var te = model.TextEncoder;
        double lrUnet = f.MetaDouble("lr_unet"), lrTe = f.MetaDouble("lr_text_encoder");
        double wdUnet = f.MetaDouble("weight_decay_unet"), wdTe = f.MetaDouble("weight_decay_text_encoder");
        double priorWeight = f.MetaDouble("prior_loss_weight"), emaDecay = f.MetaDouble("ema_decay");
        var betas = f.Meta("betas").EnumerateArray().Select(e => e.GetDouble()).ToArray();

        // the trainer's setup: fp32 masters (shared with the modules in fp32), groups per model, EMA of the UNet masters
        foreach (var p in unet.parameters()) p.requires_grad_(true);
        foreach (var p in te.parameters()) p.requires_grad_(trainTextEncoder);
        unet.train();
        if (trainTextEncoder) te.train(); else te.eval();
        using var unetMasters = new MasterWeights(unet, ScalarType.Float32, (_, _) => true);
        using var teMasters = new MasterWeights(te, ScalarType.Float32, (_, _) => true);
        using var optimizer = new Lion(
        [
            new ParamGroup("unet", unetMasters.Masters, lrUnet, wdUnet),
            new ParamGroup("text_encoder", teMasters.Masters, lrTe, wdTe) { Enabled = trainTextEncoder },
        ], betas[0], betas[1]);
        var state = new Dictionary<string, Tensor>();
        AddMomentum(state, f, "unet", unetMasters);
        if (trainTextEncoder) AddMomentum(state, f, "text_encoder", teMasters);
        optimizer.LoadStateDict(state);
        using var ema = new EmaModel(unetMasters.Names.Zip(unetMasters.Masters), emaDecay, warmup: false);
        var teBefore = te.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.detach().clone());

        // TrainStep: text states (with grad only when the TE trains), the objective, backward
        var latents = f.Get("latents");
        var noise = f.Get("noise");
        var timesteps = f.Get("timesteps");
        var ids = f.Get("input_ids");
        // diffusers chunks the batch in two: its instance samples first, then its class samples, as our batches hold them
        var isClass = f.Get("is_class").data<bool>().ToArray();
        Assert.Equal([false, false, true, true], isClass);
        Parity.AssertClose(log, "train step noisy latents (ours float64 ᾱ)", schedule.AddNoise(latents, noise, timesteps), f.Get("noisy_latents"), 1e-6);
        Tensor states;
        if (trainTextEncoder) states = PromptEncoder.EncodePrompts(te, ids, 1);
        else using (no_grad()) states = PromptEncoder.EncodePrompts(te, ids, 1);
        Parity.AssertClose(log, "train step encoder_hidden_states", states, f.Get("encoder_hidden_states"), 1e-5);
        var (loss, instance, prior) = DreamBoothObjective.Compute(unet, schedule, latents, noise, timesteps, states,
            instances: isClass.Count(c => !c), classes: isClass.Count(c => c), priorWeight, ScalarType.Float32);
        Parity.AssertClose(log, "train step loss (instance + 0.75 prior)", loss, f.Get("loss"), 1e-5);
        Parity.AssertClose(log, "train step instance loss", instance!, f.Get("instance_loss"), 1e-5);
        Parity.AssertClose(log, "train step prior loss", prior!, f.Get("prior_loss"), 1e-5);
        loss.backward();

        string tag = trainTextEncoder ? "TE trained" : "TE frozen";
        CompareGradients(f, "unet", unetMasters, tag);
        if (trainTextEncoder) CompareGradients(f, "text_encoder", teMasters, tag);
        else Assert.All(te.parameters(), p => Assert.Null(p.grad));

        // OptimizerStep: grads onto masters, clipping per group (the recipe: UNet 1, text encoder 0 = off), Lion,
        // masters back into the modules, EMA
        Assert.True(unetMasters.CopyGradsToMasters() & (!trainTextEncoder || teMasters.CopyGradsToMasters()));
        double maxNorm = f.MetaDouble("max_grad_norm_unet");
        double norm = GradientClipping.ClipGradNorm(optimizer.Groups[0].Params, maxNorm);
        double referenceNorm = f.Get("grad_norm.unet").item<float>();
        log.WriteLine($"PARITY | train step UNet gradient norm {referenceNorm:0.###} before clipping to {maxNorm} ({tag}) | {Math.Abs(norm - referenceNorm):0.00e+00} | {Math.Abs(norm - referenceNorm) / referenceNorm:0.00e+00} | bound {GradientBound:0.#e+0}");
        Assert.True(Math.Abs(norm - referenceNorm) <= GradientBound * referenceNorm, $"gradient norm {norm} vs torch.nn.utils.clip_grad_norm_'s {referenceNorm}");
        Assert.True(norm > maxNorm, "the clipping must act for this check to mean anything");
        if (trainTextEncoder) GradientClipping.ClipGradNorm(optimizer.Groups[1].Params, f.MetaDouble("max_grad_norm_text_encoder"));
        var ourGrads = unetMasters.Names.Zip(unetMasters.Masters).Select(x => ("unet", x.First, x.Second))
            .Concat(teMasters.Names.Zip(teMasters.Masters).Select(x => ("text_encoder", x.First, x.Second)))
            .Where(x => x.Item3.grad is not null)
            .ToDictionary(x => $"{x.Item1}.{x.Item2}", x => { using var g = x.Item3.grad; return g!.detach().clone(); });
        double referenceCoefficient = Math.Min(1.0, maxNorm / (referenceNorm + 1e-6));
        optimizer.Step();
        optimizer.ZeroGrad();
        unetMasters.CopyMastersToModel();
        teMasters.CopyMastersToModel();
        ema.Update(unetMasters.Names.Zip(unetMasters.Masters));

        long unetFlips = CompareLionStep(f, "unet", unetMasters, optimizer, lrUnet, betas[0], ourGrads, referenceCoefficient, tag);
        if (trainTextEncoder) CompareLionStep(f, "text_encoder", teMasters, optimizer, lrTe, betas[0], ourGrads, 1.0, tag);
        else
            foreach (var (name, t) in te.state_dict())
                Parity.AssertEqual($"frozen TE {name}", t, teBefore[name]);
        // the EMA moves (1 − d) of the way to the new weights: a flipped Lion sign shows as (1 − d)·2·lr, nothing else
        long emaOff = 0, emaFlipped = 0;
        foreach (var n in unetMasters.Names)
        {
            using var s = NewDisposeScope();
            var d = (ema.Shadow[n] - f.Get($"ema1.unet.{n}")).abs();
            emaOff += d.gt(1e-6).sum().item<long>();
            emaFlipped += d.gt((1 - emaDecay) * 2 * lrUnet * 1.01).sum().item<long>();
        }
        log.WriteLine($"PARITY | train step EMA update, decay {emaDecay} ({tag}) | {emaOff} values beyond 1e-6, all at flipped Lion signs | bound: flips");
        Assert.Equal(0, emaFlipped);
        Assert.True(emaOff <= unetFlips, $"EMA: {emaOff} values differ beyond rounding, Lion flipped {unetFlips}");
    }

    /// <summary>
    /// Our clipping and Lion on the reference's own gradients and momentum: the update rule alone, element for element
    /// (the clipping coefficient may differ from torch's fp32 one in its last bit, which Lion's sign does not see).
    /// </summary>
    [Fact]
    public void Lion_step_on_the_reference_gradients_equals_lion_pytorch()
    {
        using var scope = NewDisposeScope();
        using var model = TinySdModel.Load();
        using var f = ParityFile.Open("train_step.safetensors");
        var betas = f.Meta("betas").EnumerateArray().Select(e => e.GetDouble()).ToArray();
        using var unetMasters = new MasterWeights(model.UNet, ScalarType.Float32, (_, _) => true);
        using var teMasters = new MasterWeights(model.TextEncoder, ScalarType.Float32, (_, _) => true);
        using var optimizer = new Lion(
        [
            new ParamGroup("unet", unetMasters.Masters, f.MetaDouble("lr_unet"), f.MetaDouble("weight_decay_unet")),
            new ParamGroup("text_encoder", teMasters.Masters, f.MetaDouble("lr_text_encoder"), f.MetaDouble("weight_decay_text_encoder")),
        ], betas[0], betas[1]);
        var state = new Dictionary<string, Tensor>();
        AddMomentum(state, f, "unet", unetMasters);
        AddMomentum(state, f, "text_encoder", teMasters);
        optimizer.LoadStateDict(state);
        double decay = f.MetaDouble("ema_decay");
        using var ema = new EmaModel(unetMasters.Names.Zip(unetMasters.Masters), decay, warmup: false);
        foreach (var (group, masters) in new[] { ("unet", unetMasters), ("text_encoder", teMasters) })
            foreach (var (name, p) in masters.Names.Zip(masters.Masters))
                p.grad = f.Get($"grad.{group}.{name}");
        GradientClipping.ClipGradNorm(optimizer.Groups[0].Params, f.MetaDouble("max_grad_norm_unet"));
        optimizer.Step();
        var momentum = optimizer.StateDict();
        foreach (var (group, masters) in new[] { ("unet", unetMasters), ("text_encoder", teMasters) })
        {
            var weights = Max(masters.Names.Zip(masters.Masters).Select(x => Parity.Diff(x.Second.detach(), f.Get($"param1.{group}.{x.First}"))));
            var m = Max(masters.Names.Select((n, i) => Parity.Diff(momentum[$"{group}/{i}/exp_avg"], f.Get($"exp_avg1.{group}.{n}"))));
            Parity.Report(log, $"Lion on reference gradients: {group} weights", weights, 1e-7);
            Parity.Report(log, $"Lion on reference gradients: {group} momentum", m, 1e-6);
            // the same fp32 operations as lion-pytorch's update_fn: at most a rounding apart, no sign flips (2·lr = 1e-4)
            Assert.True(weights.MaxAbs <= 1e-7, $"{group} weights: {weights}");
            Assert.True(m.Relative <= 1e-6, $"{group} momentum: {m}");
        }
        foreach (var t in momentum.Values) t.Dispose();

        // the EMA update on exactly the reference's new weights: diffusers' EMAModel at a fixed decay
        ema.Update(unetMasters.Names.Zip(unetMasters.Masters));
        var emaDiff = Max(unetMasters.Names.Select(n => Parity.Diff(ema.Shadow[n], f.Get($"ema1.unet.{n}"))));
        Parity.Report(log, $"EMA update (decay {decay}) on the reference's new weights", emaDiff, 1e-6);
        Assert.True(emaDiff.Relative <= 1e-6, $"EMA: {emaDiff}");
    }

    static void AddMomentum(Dictionary<string, Tensor> state, ParityFile f, string group, MasterWeights masters)
    {
        for (int i = 0; i < masters.Names.Count; i++)
        {
            state[$"{group}/{i}/exp_avg"] = f.Get($"exp_avg0.{group}.{masters.Names[i]}", dtype: ScalarType.Float32);
            state[$"{group}/{i}/step"] = tensor(0L);
        }
    }

    void CompareGradients(ParityFile f, string group, MasterWeights masters, string tag)
    {
        var diffs = masters.Names.Zip(masters.Masters).Select(x =>
        {
            using var g = x.Second.grad;
            Assert.True(g is not null, $"{group} {x.First}: no gradient");
            return (Name: x.First, Diff: Parity.Diff(g!, f.Get($"grad.{group}.{x.First}")));
        }).ToList();
        var all = Max(diffs.Select(d => d.Diff));
        Parity.Report(log, $"train step {group} gradients, {diffs.Count} tensors ({tag})", all, GradientBound);
        Assert.True(all.Relative <= GradientBound, $"{group} gradients: {all}");
        // per tensor, against its own largest gradient, floored at 1e-3 of the largest of all (some gradients are zero
        // in exact arithmetic, e.g. CLIP's k_proj.bias: softmax ignores a shift shared by a row, and both sides hold noise)
        double floor = 1e-3 * all.ReferenceMaxAbs;
        var worst = diffs.MaxBy(d => d.Diff.MaxAbs / Math.Max(d.Diff.ReferenceMaxAbs, floor));
        double worstRelative = worst.Diff.MaxAbs / Math.Max(worst.Diff.ReferenceMaxAbs, floor);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture, $"WORST | {group} gradient {worst.Name} | {worst.Diff} | rel to max(own, 1e-3 global) {worstRelative:0.00e+00}"));
        Assert.True(worstRelative <= 1e-3, $"{group} gradient {worst.Name}: {worst.Diff}");
    }

    /// <summary>
    /// Lion moves each weight by exactly ±lr (plus the decay), so the new weights equal the reference's except where
    /// sign(β1·m + (1−β1)·g) differs between our gradient and the reference's. Every such flip must be explained by the
    /// gradients' difference (the reference's argument lies within it of zero), and the weights must differ exactly there.
    /// </summary>
    long CompareLionStep(ParityFile f, string group, MasterWeights masters, Lion optimizer, double lr, double beta1,
        IReadOnlyDictionary<string, Tensor> ourGrads, double referenceClip, string tag)
    {
        long flips = 0, unexplained = 0, moved = 0, total = 0;
        var momentumDiffs = new List<ParityDiff>();
        var momentum = optimizer.StateDict();
        for (int i = 0; i < masters.Names.Count; i++)
        {
            using var s = NewDisposeScope();
            string name = masters.Names[i];
            var m0 = f.Get($"exp_avg0.{group}.{name}", dtype: ScalarType.Float32);
            var gRef = f.Get($"grad.{group}.{name}") * referenceClip;   // clipped as the reference's step saw it
            var gOurs = ourGrads[$"{group}.{name}"];                         // clipped by ours
            var argRef = m0 * beta1 + gRef * (1 - beta1);
            var argOurs = m0 * beta1 + gOurs * (1 - beta1);
            var flipped = argRef.sign().ne(argOurs.sign());
            flips += flipped.sum().item<long>();
            unexplained += flipped.logical_and(argRef.abs().gt((gOurs - gRef).abs() * (2 * (1 - beta1)))).sum().item<long>();
            // a flipped sign moves the weight by 2·lr; anything else is fp32 rounding of p·(1 − lr·wd) ± lr
            var d = (masters.Masters[i].detach() - f.Get($"param1.{group}.{name}")).abs();
            moved += d.gt(lr).logical_xor(flipped).sum().item<long>();
            total += d.NumberOfElements;
            momentumDiffs.Add(Parity.Diff(momentum[$"{group}/{i}/exp_avg"], f.Get($"exp_avg1.{group}.{name}")));
        }
        foreach (var t in momentum.Values) t.Dispose();
        var m = Max(momentumDiffs);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"PARITY | train step {group} Lion update ({tag}) | {flips} of {total} signs flipped, all within the gradient difference of 0 | weights equal elsewhere"));
        Parity.Report(log, $"train step {group} Lion momentum ({tag})", m, GradientBound);
        Assert.Equal(0, unexplained);
        Assert.Equal(0, moved);   // our weights differ from the reference's exactly where the signs flipped
        Assert.True(m.Relative <= GradientBound, $"{group} momentum: {m}");
        return flips;
    }

    static ParityDiff Max(IEnumerable<ParityDiff> diffs)
    {
        var list = diffs.ToList();
        return new ParityDiff(list.Max(d => d.MaxAbs), list.Average(d => d.MeanAbs), list.Max(d => d.ReferenceMaxAbs));
    }
}
