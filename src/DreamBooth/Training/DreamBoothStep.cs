using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Schedulers;
using DreamBooth.Text;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>Per-sample inputs of one forward pass: latents [B,4,h,w] (fp32, scaled), token ids on the device and their host copy, and how many samples are instance images (the first ones) and class images (the rest): known on the host, never looked up on the device.</summary>
public sealed record StepInputs(Tensor Latents, Tensor InputIds, Tensor InputIdsHost, int Instances, int Classes);

/// <summary>What one optimizer step gave: each batch's (loss, instance, prior) — NaN for a part the batch did not hold —, the grad norms, and whether the update was applied (false: a non-finite gradient or loss; nothing changed).</summary>
public sealed record StepOutcome(IReadOnlyList<(double Loss, double Instance, double Prior)> Batches, double GradNorm, double TextEncoderGradNorm, bool Applied);

/// <summary>
/// The DreamBooth step of <see cref="DreamBoothTrainer"/> and everything one optimizer step does to the models: fp32
/// masters of the UNet and text encoder with bf16/fp16 compute copies, the optimizer with its UNet and text-encoder
/// groups, the LR schedule, the fp16 loss scaler and EMA. <see cref="TrainStep"/> is the paper's step (one batch,
/// forward and backward); <see cref="OptimizerStep"/> the update after one or more of them. The trainer feeds it real
/// batches; <c>dreambooth bench train</c> feeds it random latents, so the bench times the code users run.
/// <para>
/// <b>One read per step, after the update is queued.</b> Nothing inside the step waits for the device: the
/// instance/class split is known on the host, losses stay on the device, the gradient check (each group's norm, which
/// is non-finite when a gradient is) and the clip factors are computed there, and the LR is a host number. With the
/// flattened Lion (the recipe's optimizer, <see cref="TrainingOptimizer.CanSkipOnDevice"/>) the update and EMA are
/// queued with the check as a device-side condition, then the losses, norms and check come back in one transfer;
/// an optimizer that steps per tensor (AdamW, AdamW 8-bit) reads the same values once before its update instead.
/// Either way a non-finite step never changes a weight, a moment or the EMA.
/// </para>
/// </summary>
public sealed class DreamBoothStep : IDisposable
{
    readonly TrainingConfig _c;
    readonly UNet2DConditionModel _unet;
    readonly CLIPTextModel _textEncoder;
    readonly NoiseSchedule _schedule;
    readonly Device _device;
    readonly ScalarType _computeDtype;
    readonly MasterWeights _unetMasters;
    readonly MasterWeights _teMasters;
    readonly TrainingOptimizer _optimizer;
    readonly LrSchedule _lr;
    readonly EmaModel? _ema;
    readonly LossScaler _scaler;
    readonly Dictionary<string, Tensor> _textCache = new();
    bool _teFrozen;

    public Device Device => _device;
    public ScalarType ComputeDtype => _computeDtype;
    public MasterWeights UNetMasters => _unetMasters;
    public MasterWeights TextEncoderMasters => _teMasters;
    public TrainingOptimizer Optimizer => _optimizer;
    public EmaModel? Ema => _ema;
    public LossScaler Scaler => _scaler;
    public bool TextEncoderFrozen => _teFrozen;

    /// <summary>
    /// Called as each part of a step begins (the bench's profile): "forward", "backward" (<see cref="TrainStep"/>),
    /// "gradients" (grads → masters, norms, finite check), "optimizer" (clip, update, masters → compute copies), "ema",
    /// and "read" (the step's one transfer: after "ema" with the flattened Lion, before "optimizer" otherwise).
    /// </summary>
    public Action<string>? PhaseStarted { get; set; }

    /// <summary>
    /// Sets up training of <paramref name="unet"/> and <paramref name="textEncoder"/> (fp32, already on
    /// <paramref name="device"/>): what trains (train_unet; the text encoder when <paramref name="textEncoderSteps"/>
    /// &gt; 0, without its LayerNorms with freeze_clip_normalization), gradient checkpointing, fp32 masters and compute
    /// copies, the optimizer (config.optimizer; "lion" is <see cref="FlatLion"/>), the LR schedule over
    /// <paramref name="totalSteps"/>, the loss scaler (fp16) and EMA. <paramref name="optimizer"/> builds another
    /// optimizer over the same groups (tests and the bench: the per-tensor <see cref="Lion"/> beside the flattened one).
    /// </summary>
    public DreamBoothStep(TrainingConfig config, UNet2DConditionModel unet, CLIPTextModel textEncoder, NoiseSchedule schedule, Device device,
        int totalSteps, int textEncoderSteps, Func<IReadOnlyList<ParamGroup>, TrainingOptimizer>? optimizer = null)
    {
        _c = config;
        _unet = unet;
        _textEncoder = textEncoder;
        _schedule = schedule;
        _device = device;
        _computeDtype = MasterWeights.DtypeOf(config.MixedPrecision);

        foreach (var (_, p) in unet.named_parameters()) p.requires_grad_(config.TrainUnet);
        foreach (var (name, p) in textEncoder.named_parameters()) p.requires_grad_(textEncoderSteps > 0 && !(config.FreezeClipNormalization && IsLayerNorm(textEncoder, name)));
        var unetTrainable = unet.named_parameters().Where(kv => kv.parameter.requires_grad).Select(kv => kv.name).ToArray();
        var teTrainable = textEncoder.named_parameters().Where(kv => kv.parameter.requires_grad).Select(kv => kv.name).ToArray();
        unet.GradientCheckpointing = config.GradientCheckpointing;

        // fp32 masters of every weight (so saves never round through the compute dtype), then the compute copies
        _unetMasters = new MasterWeights(unet, _computeDtype, (_, _) => true);
        _teMasters = new MasterWeights(textEncoder, _computeDtype, (_, _) => true);
        ParamGroup[] groups =
        [
            new ParamGroup("unet", Select(_unetMasters, unetTrainable), config.LearningRate, config.WeightDecay) { Enabled = config.TrainUnet },
            new ParamGroup("text_encoder", Select(_teMasters, teTrainable), config.TextEncoderLearningRate, config.TextEncoderWeightDecay) { Enabled = textEncoderSteps > 0 },
        ];
        // bf16/fp16: the masters' grads are copied in after backward, so the flattened Lion frees their buffer between
        // steps (no 4 GB of fp32 gradients held through forward and backward at SD1.5 size)
        _optimizer = optimizer?.Invoke(groups) ?? (config.Optimizer == "lion"
            ? new FlatLion(groups, releaseGradients: _computeDtype != ScalarType.Float32)
            : TrainingOptimizer.Create(config.Optimizer, groups));
        _lr = LrSchedule.FromConfig(config, totalSteps);
        _scaler = new LossScaler(enabled: _computeDtype == ScalarType.Float16);
        // after the optimizer: the flattened Lion has moved the UNet masters into one buffer, which EMA then follows in one kernel
        if (config.UseEma)
            _ema = new EmaModel(_unetMasters.Names.Zip(_unetMasters.Masters), config.EmaDecay, config.EmaWarmup, DreamBoothTrainer.EmaDeviceFor(config, device));
        if (textEncoderSteps == 0) FreezeTextEncoder();
        else textEncoder.train();
        if (config.TrainUnet) unet.train(); else unet.eval();
    }

    static IReadOnlyList<Tensor> Select(MasterWeights m, string[] names)
    {
        var set = names.ToHashSet();
        return m.Names.Select((n, i) => (n, i)).Where(x => set.Contains(x.n)).Select(x => m.Masters[x.i]).ToList();
    }

    static bool IsLayerNorm(CLIPTextModel te, string paramName)
    {
        int dot = paramName.LastIndexOf('.');
        string owner = dot < 0 ? "" : paramName[..dot];
        return te.named_modules().Any(m => m.name == owner && m.module is TorchSharp.Modules.LayerNorm);
    }

    void Phase(string name) => PhaseStarted?.Invoke(name);

    // ------------------------------------------------------------------ the step

    /// <summary>
    /// One forward/backward on a batch: noise → timesteps → text states → <see cref="DreamBoothObjective"/> (add_noise →
    /// UNet → target → fp32 per-sample MSE, split into instance and prior) → backward of (instance + w·prior)·scale/accumulation. A batch holds instance samples, class
    /// samples (alternate prior stepping: loss = w·prior) or both (joint: instances first). Returns [loss, instance,
    /// prior] on the device (NaN for a part the batch does not have); nothing is read back here.
    /// </summary>
    public Tensor TrainStep(StepInputs x, double priorWeight, Generator gen)
    {
        using var scope = torch.NewDisposeScope();
        Phase("forward");
        var latents = x.Latents;                                                    // [B,4,h,w] fp32, scaled
        var noise = torch.randn(latents.shape, generator: gen, device: latents.device);
        if (_c.OffsetNoise != 0)
            noise = noise + _c.OffsetNoise * torch.randn([latents.shape[0], latents.shape[1], 1, 1], generator: gen, device: latents.device);
        long bsz = latents.shape[0];
        var timesteps = torch.randint(0, _schedule.NumTrainTimesteps, [bsz], generator: gen, dtype: ScalarType.Int64, device: latents.device);
        var encoderHiddenStates = EncodeText(x.InputIds, x.InputIdsHost);
        var (loss, instanceLoss, priorLoss) = DreamBoothObjective.Compute(_unet, _schedule, latents, noise, timesteps,
            encoderHiddenStates, x.Instances, x.Classes, priorWeight, _computeDtype);

        Phase("backward");
        (loss * (_scaler.Scale / _c.GradientAccumulationSteps)).backward();
        var none = torch.full(Array.Empty<long>(), float.NaN, ScalarType.Float32, loss.device);
        return torch.stack([loss.detach(), instanceLoss?.detach() ?? none, priorLoss?.detach() ?? none]).MoveToOuterDisposeScope();
    }

    Tensor EncodeText(Tensor ids, Tensor idsHost)
    {
        if (!_teFrozen) return PromptEncoder.EncodePrompts(_textEncoder, ids, _c.ClipSkip);
        // frozen TE: embeddings are fixed per token row, computed once (keyed by the host copy of the ids: no device read)
        using var scope = torch.NewDisposeScope();
        var rows = new List<Tensor>();
        for (long i = 0; i < idsHost.shape[0]; i++)
        {
            var row = idsHost[i];
            string key = string.Join(",", row.data<long>().ToArray());
            if (!_textCache.TryGetValue(key, out var emb))
            {
                using (torch.no_grad())
                    emb = PromptEncoder.EncodePrompts(_textEncoder, row.unsqueeze(0).to(_device, non_blocking: true), _c.ClipSkip).DetachFromDisposeScope();
                _textCache[key] = emb;
            }
            rows.Add(emb);
        }
        return torch.cat(rows, 0).MoveToOuterDisposeScope();
    }

    // ------------------------------------------------------------------ the update

    /// <summary>
    /// The update after the batches of one optimizer step (<paramref name="batchLosses"/>: what <see cref="TrainStep"/>
    /// returned for each): grads → fp32 masters (unscaled), each group's grad norm and the finite check on the device,
    /// clipping per group, the optimizer at the LR of <paramref name="step"/>, masters → compute copies, EMA; then the
    /// step's one host read. A non-finite gradient or loss applies nothing (fp16: the scale is halved).
    /// </summary>
    public StepOutcome OptimizerStep(int step, IReadOnlyList<Tensor> batchLosses)
    {
        using var scope = torch.NewDisposeScope();
        Phase("gradients");
        _optimizer.AttachGradients();   // the flattened optimizer's gradient views: the masters' grads are written into them
        var unetParams = _optimizer.Groups[0].Params;
        var teParams = _teFrozen ? [] : _optimizer.Groups[1].Params;
        var norms = GradientClipping.MoveGradsAndNormsOnDevice(_teFrozen ? [_unetMasters] : [_unetMasters, _teMasters], [unetParams, teParams], 1.0 / _scaler.Scale);
        var losses = torch.stack(batchLosses);                                            // [batches, 3]
        var apply = norms.isfinite().all().logical_and(losses.select(1, 0).isfinite().all());
        var readback = torch.cat([losses.reshape(-1), norms, apply.to(ScalarType.Float32).reshape(1)]);

        float[] host;
        if (_optimizer.CanSkipOnDevice)
        {
            QueueUpdate(step, norms, apply);
            Phase("read");
            host = HostRead.Floats(readback);
        }
        else
        {
            Phase("read");
            host = HostRead.Floats(readback);
            if (host[^1] == 1f) QueueUpdate(step, norms, apply: null);
            else _optimizer.ZeroGrad();
        }

        bool applied = host[^1] == 1f;
        if (!applied && _optimizer.CanSkipOnDevice)
        {
            _optimizer.StepWasSkipped();
            _ema?.StepWasSkipped();
        }
        _scaler.Update(applied);
        var batches = Enumerable.Range(0, batchLosses.Count).Select(b => ((double)host[3 * b], (double)host[3 * b + 1], (double)host[3 * b + 2])).ToList();
        return applied
            ? new StepOutcome(batches, host[^3], _teFrozen ? 0 : host[^2], true)
            : new StepOutcome(batches, double.NaN, double.NaN, false);
    }

    /// <summary>Clip, LR, optimizer step, zero grad, masters → compute copies, EMA: queued, with <paramref name="apply"/> as the device-side condition when given.</summary>
    void QueueUpdate(int step, Tensor norms, Tensor? apply)
    {
        Phase("optimizer");
        if (_c.MaxGradNorm > 0) _optimizer.ScaleGradients(0, GradientClipping.ClipFactor(norms[0], _c.MaxGradNorm));
        if (!_teFrozen && _c.TextEncoderMaxGradNorm > 0) _optimizer.ScaleGradients(1, GradientClipping.ClipFactor(norms[1], _c.TextEncoderMaxGradNorm));
        foreach (var g in _optimizer.Groups) g.LearningRate = _lr.LearningRate(step, g.BaseLearningRate);
        _optimizer.Step(apply);
        _optimizer.ZeroGrad();
        _unetMasters.CopyMastersToModel();
        if (!_teFrozen) _teMasters.CopyMastersToModel();
        if (_ema is null) return;
        Phase("ema");
        _ema.Update(_unetMasters.Names.Zip(_unetMasters.Masters).ToList(), apply);
    }

    /// <summary>The TE stops training: no grads, eval mode, its optimizer group disabled and its state dropped; its embeddings are cached from now on.</summary>
    public void FreezeTextEncoder()
    {
        _teFrozen = true;
        foreach (var p in _textEncoder.parameters()) { p.requires_grad_(false); TrainingOptimizer.ClearGrad(p); }
        foreach (var m in _teMasters.Masters) TrainingOptimizer.ClearGrad(m);
        _textEncoder.eval();
        _optimizer.Groups[1].Enabled = false;
        _optimizer.DropState("text_encoder");
    }

    /// <summary>Clears the compute copies' gradients (a step retried after an out-of-memory error starts clean).</summary>
    public void ClearComputeGradients()
    {
        foreach (var p in _unet.parameters().Concat(_textEncoder.parameters())) TrainingOptimizer.ClearGrad(p);
    }

    public void Dispose()
    {
        _optimizer.Dispose();
        _ema?.Dispose();
        _unetMasters.Dispose();
        _teMasters.Dispose();
        foreach (var t in _textCache.Values) t.Dispose();
        _textCache.Clear();
    }
}
