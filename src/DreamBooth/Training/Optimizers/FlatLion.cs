using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// <see cref="Lion"/> over flattened buffers (the multi-tensor / "foreach" idea PyTorch uses, which TorchSharp
/// does not expose), the trainer's "lion": the fp32 parameters of each group are moved into one contiguous buffer
/// (each parameter becomes a view of it, so modules and master-weight copies keep working), their gradients are
/// views of a second buffer, and the momentum is a third. A step is then a handful of kernels per chunk of
/// <see cref="ChunkElements"/> values instead of five per parameter tensor, and it never reads a value back to the
/// host. The arithmetic is the per-tensor Lion's, element for element (bitwise equal):
/// <code>
/// p ← p·(1 − lr·wd) ;  p ← p − lr·sign(β1·m + (1−β1)·g) ;  m ← β2·m + (1−β2)·g
/// </code>
/// <para>
/// <b>Skipping on the device.</b> <see cref="Step(Tensor?)"/> with a 0-dim bool <c>apply</c> queues the same update
/// with its factors chosen on the device: where apply is false the gradient is zeroed, the decay factor is 1, the
/// step size 0 and β2 is 1, so parameters and momentum keep every bit; where it is true every product is the one
/// above (the step size multiplies sign values ±1/0, so p + sign·(−lr) is exact before its one rounding, as in
/// <c>add_(sign, alpha: −lr)</c>). The trainer uses it to skip a non-finite step without waiting for the device.
/// </para>
/// <para>
/// <b>Gradients.</b> By default the gradient buffer lives as long as the optimizer and <see cref="ZeroGrad"/> zeroes
/// it, so a backward through modules whose parameters are these views accumulates straight into it. With
/// <c>releaseGradients</c> (the trainer's fp32 masters of a bf16/fp16 model, whose gradients are copied in after
/// backward) <see cref="ZeroGrad"/> frees it like PyTorch's set_to_none and <see cref="AttachGradients"/> allocates
/// it again just before the copy, so it takes no memory during forward and backward.
/// A parameter whose <c>.grad</c> is none is left alone (as <see cref="Lion"/> does); a gradient that is not the
/// installed view is copied into the buffer first. State keys match <see cref="Lion"/>'s
/// (<c>{group}/{index}/exp_avg</c>, <c>/step</c>): a state saved by either loads into the other.
/// </para>
/// </summary>
public sealed class FlatLion : TrainingOptimizer
{
    /// <summary>Default chunk: 16 Mi values (64 MiB of fp32 scratch), so a step never allocates a model-sized temporary.</summary>
    public const long DefaultChunkElements = 1L << 24;

    sealed class FlatGroup(ParamGroup group, Tensor parameters, long[] offsets, long[] sizes, Device device)
    {
        public ParamGroup Group { get; } = group;
        public Tensor Parameters { get; } = parameters;
        public long[] Offsets { get; } = offsets;
        public long[] Sizes { get; } = sizes;
        public Device Device { get; } = device;
        public Tensor? Grads { get; set; }
        public Tensor[]? GradViews { get; set; }
        public Tensor? Momentum { get; set; }
        public long Steps { get; set; }
        public bool CountedLastStep { get; set; }
    }

    readonly FlatGroup[] _flat;
    readonly Tensor _scratch;
    readonly bool _releaseGradients;

    public double Beta1 { get; }
    public double Beta2 { get; }
    public long ChunkElements { get; }

    /// <summary>
    /// Flattens every group (all its parameters must be fp32 on one device). The parameters' values are kept;
    /// existing gradients are copied into the gradient buffer.
    /// </summary>
    public FlatLion(IReadOnlyList<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.99, long chunkElements = DefaultChunkElements,
        bool releaseGradients = false) : base(groups)
    {
        if (chunkElements < 1) throw new ArgumentOutOfRangeException(nameof(chunkElements));
        Beta1 = beta1;
        Beta2 = beta2;
        ChunkElements = chunkElements;
        _releaseGradients = releaseGradients;
        _flat = new FlatGroup[groups.Count];
        Device? device = null;
        long largest = 1;
        using (torch.no_grad())
            for (int gi = 0; gi < groups.Count; gi++)
            {
                var g = groups[gi];
                foreach (var p in g.Params)
                {
                    if (p.dtype != ScalarType.Float32)
                        throw new ArgumentException($"FlatLion needs fp32 (master) parameters; group '{g.Name}' has {p.dtype}");
                    device ??= p.device;
                    if (p.device.type != device.type || p.device.index != device.index)
                        throw new ArgumentException($"FlatLion needs all parameters on one device; group '{g.Name}' mixes {device} and {p.device}");
                }
                var sizes = g.Params.Select(p => p.NumberOfElements).ToArray();
                var offsets = new long[sizes.Length];
                for (int i = 1; i < sizes.Length; i++) offsets[i] = offsets[i - 1] + sizes[i - 1];
                long total = sizes.Sum();
                largest = Math.Max(largest, total);
                var dev = device ?? torch.CPU;
                // empty: pages are touched slice by slice as the old parameter storage is released, so flattening
                // never holds two copies of the model; gradients and momentum are allocated afterwards
                var flatP = torch.empty(total, ScalarType.Float32, dev).DetachFromDisposeScope();
                for (int i = 0; i < sizes.Length; i++)
                {
                    var p = g.Params[i];
                    using var pView = flatP.narrow(0, offsets[i], sizes[i]).view(p.shape);
                    pView.copy_(p);
                    p.set_(pView);   // the parameter now lives in the flat buffer
                }
                var f = new FlatGroup(g, flatP, offsets, sizes, dev);
                _flat[gi] = f;
                // existing gradients move into the buffer; without releaseGradients the views stay installed, so
                // backward accumulates in place
                if (!releaseGradients)
                {
                    EnsureGradientBuffer(f, zero: true);
                    Gather(f);
                    for (int i = 0; i < sizes.Length; i++) g.Params[i].grad = f.GradViews![i];
                }
                else if (g.Params.Any(HasGrad)) Gather(f);
            }
        foreach (var f in _flat) f.Momentum = torch.zeros(f.Parameters.NumberOfElements, ScalarType.Float32, f.Device).DetachFromDisposeScope();
        _scratch = torch.empty(Math.Min(largest, chunkElements), ScalarType.Float32, device ?? torch.CPU).DetachFromDisposeScope();
    }

    static bool HasGrad(Tensor p)
    {
        using var g = p.grad;
        return g is not null;
    }

    public override bool CanSkipOnDevice => true;

    /// <summary>
    /// Installs the gradient views on every parameter of the enabled groups, allocating the buffer if it was released
    /// (then uninitialised: each view must be written, as <see cref="MasterWeights.MoveGradsToMasters"/> does, or
    /// cleared before <see cref="Step(Tensor?)"/>). A gradient already present is copied into its view.
    /// </summary>
    public override void AttachGradients()
    {
        using var noGrad = torch.no_grad();
        foreach (var f in _flat)
        {
            if (!f.Group.Enabled) continue;
            Gather(f);
            for (int i = 0; i < f.Sizes.Length; i++) f.Group.Params[i].grad = f.GradViews![i];
        }
    }

    void EnsureGradientBuffer(FlatGroup f, bool zero)
    {
        if (f.Grads is not null) return;
        long total = f.Parameters.NumberOfElements;
        f.Grads = (zero ? torch.zeros(total, ScalarType.Float32, f.Device) : torch.empty(total, ScalarType.Float32, f.Device)).DetachFromDisposeScope();
        f.GradViews = new Tensor[f.Sizes.Length];
        for (int i = 0; i < f.Sizes.Length; i++)
            f.GradViews[i] = f.Grads.narrow(0, f.Offsets[i], f.Sizes[i]).view(f.Group.Params[i].shape).DetachFromDisposeScope();
    }

    /// <summary>
    /// Brings every gradient of the group into the buffer: a gradient that is not its view (assigned rather than
    /// accumulated or written in place) is copied in and the view installed. Returns which parameters have one.
    /// </summary>
    bool[] Gather(FlatGroup f)
    {
        EnsureGradientBuffer(f, zero: false);
        var present = new bool[f.Sizes.Length];
        for (int i = 0; i < f.Sizes.Length; i++)
        {
            var p = f.Group.Params[i];
            using var grad = p.grad;
            if (grad is null) continue;
            present[i] = true;
            if (SameMemory(grad, f.GradViews![i])) continue;
            f.GradViews![i].copy_(grad);
            p.grad = f.GradViews[i];
        }
        return present;
    }

    void ReleaseGradients(FlatGroup f)
    {
        foreach (var p in f.Group.Params) ClearGrad(p);
        if (f.GradViews is not null) foreach (var v in f.GradViews) v.Dispose();
        f.Grads?.Dispose();
        f.Grads = null;
        f.GradViews = null;
    }

    /// <summary>Multiplies the group's gradients by <paramref name="factor"/>: the whole buffer, one kernel per chunk.</summary>
    public override void ScaleGradients(int group, Tensor factor)
    {
        var f = _flat[group];
        if (f.Grads is null && !f.Group.Params.Any(HasGrad)) return;
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        Gather(f);
        for (long start = 0, total = f.Grads!.NumberOfElements; start < total; start += ChunkElements)
            f.Grads.narrow(0, start, Math.Min(ChunkElements, total - start)).mul_(factor);
    }

    /// <summary>One Lion update of every enabled group (parameters without a gradient are skipped); see the class notes for <paramref name="apply"/>.</summary>
    public override void Step(Tensor? apply)
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        var skip = apply?.logical_not();
        foreach (var f in _flat)
        {
            f.CountedLastStep = false;
            var g = f.Group;
            if (!g.Enabled) continue;
            // parameters without a gradient keep their values and momentum (their view reads 0 meanwhile)
            var present = Gather(f);
            if (!present.Contains(true)) continue;
            var skipped = new List<(Tensor P, Tensor M, Tensor PSaved, Tensor MSaved)>();
            for (int i = 0; i < f.Sizes.Length; i++)
            {
                if (present[i]) continue;
                var m = f.Momentum!.narrow(0, f.Offsets[i], f.Sizes[i]);
                skipped.Add((g.Params[i], m, g.Params[i].detach().clone(), m.clone()));
                f.GradViews![i].zero_();
            }
            f.Momentum ??= torch.zeros(f.Parameters.NumberOfElements, ScalarType.Float32, f.Device).DetachFromDisposeScope();
            f.Steps++;
            f.CountedLastStep = true;

            double lr = g.LearningRate, wd = g.WeightDecay;
            // with a device-side condition, the factors that make a false one a no-op (decay 1, step 0, β2 1)
            var decay = apply is null || wd == 0 ? null : Factor(1.0 - lr * wd, apply, f.Device);
            var stepSize = apply is null ? null : Factor(-lr, apply, f.Device, otherwise: 0.0);
            var beta2 = apply is null ? null : Factor(Beta2, apply, f.Device);
            // every scalar argument is held here until the loop ends: TorchSharp passes a Scalar's native handle
            // without keeping the managed object alive, so an inline `value: 1.0` may be finalized by a GC on another
            // thread while the kernel still reads it (seen once: addcmul_ failed in c10::Scalar::toFloat mid-run)
            using Scalar one = 1.0, beta1 = Beta1, oneMinusBeta1 = 1.0 - Beta1, beta2Value = Beta2, oneMinusBeta2 = 1.0 - Beta2,
                minusLr = -lr, decayValue = 1.0 - lr * wd;
            long total = f.Parameters.NumberOfElements;
            for (long start = 0; start < total; start += ChunkElements)
            {
                long n = Math.Min(ChunkElements, total - start);
                var p = f.Parameters.narrow(0, start, n);
                var grad = f.Grads!.narrow(0, start, n);
                var m = f.Momentum!.narrow(0, start, n);
                var c = _scratch.narrow(0, 0, n);
                if (skip is not null) grad.masked_fill_(skip, 0.0);                           // a non-finite gradient never reaches m or p
                if (decay is not null) p.mul_(decay); else if (wd != 0) p.mul_(decayValue);
                c.copy_(m).mul_(beta1).add_(grad, alpha: oneMinusBeta1).sign_();
                if (stepSize is null) p.add_(c, alpha: minusLr); else p.addcmul_(c, stepSize, value: one);
                if (beta2 is null) m.mul_(beta2Value); else m.mul_(beta2);
                m.add_(grad, alpha: oneMinusBeta2);
            }
            foreach (var (p, m, pSaved, mSaved) in skipped)
            {
                p.copy_(pSaved);
                m.copy_(mSaved);
            }
        }
    }

    /// <summary>
    /// A 0-dim fp32 factor on the device: <paramref name="value"/> (rounded to fp32, as a scalar argument of an fp32
    /// kernel is) where <paramref name="apply"/> holds, else <paramref name="otherwise"/>.
    /// </summary>
    static Tensor Factor(double value, Tensor apply, Device device, double otherwise = 1.0) =>
        torch.where(apply, torch.full(Array.Empty<long>(), value, ScalarType.Float32, device), torch.full(Array.Empty<long>(), otherwise, ScalarType.Float32, device));

    public override void StepWasSkipped()
    {
        foreach (var f in _flat)
            if (f.CountedLastStep) { f.Steps--; f.CountedLastStep = false; }
    }

    static bool SameMemory(Tensor a, Tensor b)
    {
        if (a.dtype != ScalarType.Float32 || a.device.type != b.device.type || a.storage_offset() != b.storage_offset()) return false;
        using var sa = a.storage<float>();
        using var sb = b.storage<float>();
        return sa.data_ptr() == sb.data_ptr();
    }

    /// <summary>
    /// Without releaseGradients: zeroes every gradient in one kernel per group and re-installs the gradient views (a
    /// parameter whose gradient was set to none or replaced gets its view back), so the next backward accumulates in
    /// place. With it: frees the gradient buffer and sets every gradient to none.
    /// </summary>
    public override void ZeroGrad()
    {
        using var noGrad = torch.no_grad();
        foreach (var f in _flat)
        {
            if (_releaseGradients) { ReleaseGradients(f); continue; }
            if (f.Grads is null && f.Momentum is null) continue;   // a dropped group
            EnsureGradientBuffer(f, zero: false);
            f.Grads!.zero_();
            for (int i = 0; i < f.Sizes.Length; i++)
            {
                var p = f.Group.Params[i];
                using var grad = p.grad;
                if (grad is null || !SameMemory(grad, f.GradViews![i])) p.grad = f.GradViews![i];
            }
        }
    }

    /// <summary>Frees the group's momentum and gradient buffer (its parameters stay views of the flat parameter buffer).</summary>
    public override void DropState(string groupName)
    {
        var f = _flat[IndexOf(groupName)];
        ReleaseGradients(f);
        f.Momentum?.Dispose();
        f.Momentum = null;
        f.Steps = 0;
        f.CountedLastStep = false;
    }

    /// <summary>Bytes of momentum plus the gradient buffers (while allocated) and the scratch chunk.</summary>
    public override long StateBytes =>
        _flat.Sum(f => ((f.Momentum?.NumberOfElements ?? 0) + (f.Grads?.NumberOfElements ?? 0)) * 4) + _scratch.NumberOfElements * 4;

    /// <summary>
    /// The momentum per parameter, keyed like <see cref="Lion"/>'s state: CPU copies (<paramref name="copy"/>), or views
    /// of the flat momentum buffer (no second copy while a state file is written).
    /// </summary>
    public override Dictionary<string, Tensor> StateDict(bool copy = true)
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var f in _flat)
        {
            if (f.Steps == 0 || f.Momentum is null) continue;
            for (int i = 0; i < f.Sizes.Length; i++)
            {
                string prefix = $"{f.Group.Name}/{i}/";
                using var view = f.Momentum.narrow(0, f.Offsets[i], f.Sizes[i]);
                d[prefix + "exp_avg"] = copy ? view.view(f.Group.Params[i].shape).cpu().clone() : view.view(f.Group.Params[i].shape);
                d[prefix + "step"] = torch.tensor(f.Steps, ScalarType.Int64);
            }
        }
        return d;
    }

    /// <summary>
    /// Loads momentum saved by <see cref="StateDict"/> or by the per-tensor <see cref="Lion"/> (same keys); what the
    /// state does not hold starts at zero. A group's parameters must all carry one step count (the trainer steps a
    /// group's parameters together).
    /// </summary>
    public override void LoadStateDict(IReadOnlyDictionary<string, Tensor> state) => Load(state, alreadyRead: null);

    /// <summary>
    /// Views of the flat momentum (allocated here if need be, and zeroed), one per parameter shaped like it, keyed as
    /// <see cref="StateDict"/>: a state file's momentum is read straight into them.
    /// </summary>
    public override Dictionary<string, Tensor> StateTargets()
    {
        using var noGrad = torch.no_grad();
        var d = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        foreach (var f in _flat)
        {
            if (f.Momentum is null) f.Momentum = torch.zeros(f.Parameters.NumberOfElements, ScalarType.Float32, f.Device).DetachFromDisposeScope();
            else f.Momentum.zero_();
            for (int i = 0; i < f.Sizes.Length; i++)
            {
                using var view = f.Momentum.narrow(0, f.Offsets[i], f.Sizes[i]);
                d[$"{f.Group.Name}/{i}/exp_avg"] = view.view(f.Group.Params[i].shape);
            }
        }
        return d;
    }

    /// <summary>Loads after <see cref="StateTargets"/> took the momentum named in <paramref name="alreadyRead"/>; the rest of it stays zero.</summary>
    public override void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, IReadOnlySet<string> alreadyRead) => Load(state, alreadyRead);

    void Load(IReadOnlyDictionary<string, Tensor> state, IReadOnlySet<string>? alreadyRead)
    {
        using var noGrad = torch.no_grad();
        foreach (var f in _flat)
        {
            f.Steps = 0;
            f.CountedLastStep = false;
            if (alreadyRead is null) f.Momentum?.zero_();   // with targets, StateTargets zeroed it before the read
        }
        var steps = new Dictionary<int, long>();
        foreach (var key in alreadyRead ?? Enumerable.Empty<string>())
        {
            var parts = key.Split('/');
            if (parts.Length != 3 || parts[2] != "exp_avg" || !_flat.Any(f => f.Group.Name == parts[0]))
                throw new DreamBoothException($"optimizer state: '{key}' was read as momentum but names none");
        }
        foreach (var (key, t) in state)
        {
            var parts = key.Split('/');
            if (parts.Length != 3) throw new DreamBoothException($"optimizer state: malformed key '{key}'");
            int gi = Array.FindIndex(_flat, f => f.Group.Name == parts[0]);
            if (gi < 0) throw new DreamBoothException($"optimizer state: key '{key}' names no parameter group");
            var f = _flat[gi];
            if (!int.TryParse(parts[1], out int i) || i < 0 || i >= f.Sizes.Length)
                throw new DreamBoothException($"optimizer state: key '{key}' names no parameter");
            if (parts[2] == "step")
            {
                long s = t.item<long>();
                if (steps.TryGetValue(gi, out long other) && other != s)
                    throw new DreamBoothException($"optimizer state: group '{f.Group.Name}' has parameters at different steps ({other} and {s} at '{key}'); the flattened Lion steps a group together");
                steps[gi] = s;
                continue;
            }
            if (parts[2] != "exp_avg") throw new DreamBoothException($"optimizer state: Lion has no slot '{parts[2]}' ('{key}')");
            if (t.NumberOfElements != f.Sizes[i]) throw new DreamBoothException($"optimizer state: '{key}' has {t.NumberOfElements} values, expected {f.Sizes[i]}");
            f.Momentum ??= torch.zeros(f.Parameters.NumberOfElements, ScalarType.Float32, f.Device).DetachFromDisposeScope();
            f.Momentum.narrow(0, f.Offsets[i], f.Sizes[i]).copy_(t.reshape(-1));
        }
        foreach (var (gi, s) in steps) _flat[gi].Steps = s;
    }

    protected override void Dispose(bool disposing)
    {
        foreach (var f in _flat)
        {
            ReleaseGradients(f);
            f.Momentum?.Dispose();
            f.Parameters.Dispose();   // the parameters are views: they keep the storage alive
        }
        _scratch.Dispose();
    }
}
