using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// <see cref="Lion"/> over flattened buffers (the multi-tensor / "foreach" idea PyTorch uses, which TorchSharp
/// does not expose): the fp32 parameters of each group are moved into one contiguous buffer (each parameter
/// becomes a view of it, so modules and master-weight copies keep working), their gradients are views of a
/// second buffer that backward accumulates into, and the momentum is a third. A step is then a handful of
/// kernels per chunk of <see cref="ChunkElements"/> values instead of five per parameter tensor, and it never
/// reads a value back to the host. The arithmetic is the per-tensor Lion's, element for element:
/// <code>
/// p ← p·(1 − lr·wd) ;  p ← p − lr·sign(β1·m + (1−β1)·g) ;  m ← β2·m + (1−β2)·g
/// </code>
/// A parameter whose <c>.grad</c> is none is left alone (as <see cref="Lion"/> does); a gradient that is not
/// the installed view (e.g. one assigned by <see cref="MasterWeights.CopyGradsToMasters"/>) is copied into the
/// buffer first. State keys match <see cref="Lion"/>'s (<c>{group}/{index}/exp_avg</c>, <c>/step</c>).
/// </summary>
public sealed class FlatLion : IDisposable
{
    /// <summary>Default chunk: 16 Mi values (64 MiB of fp32 scratch), so a step never allocates a model-sized temporary.</summary>
    public const long DefaultChunkElements = 1L << 24;

    sealed class FlatGroup(ParamGroup group, Tensor parameters, Tensor grads, Tensor momentum, long[] offsets, long[] sizes, Tensor[] gradViews)
    {
        public ParamGroup Group { get; } = group;
        public Tensor Parameters { get; } = parameters;
        public Tensor Grads { get; } = grads;
        public Tensor Momentum { get; } = momentum;
        public long[] Offsets { get; } = offsets;
        public long[] Sizes { get; } = sizes;
        public Tensor[] GradViews { get; } = gradViews;
        public long Steps { get; set; }
    }

    readonly FlatGroup[] _flat;
    readonly Tensor _scratch;

    public IReadOnlyList<ParamGroup> Groups { get; }
    public double Beta1 { get; }
    public double Beta2 { get; }
    public long ChunkElements { get; }

    /// <summary>
    /// Flattens every group (all its parameters must be fp32 on one device). The parameters' values are kept;
    /// existing gradients are copied into the gradient buffer.
    /// </summary>
    public FlatLion(IReadOnlyList<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.99, long chunkElements = DefaultChunkElements)
    {
        if (groups.Select(g => g.Name).Distinct().Count() != groups.Count)
            throw new ArgumentException("parameter group names must be unique");
        if (chunkElements < 1) throw new ArgumentOutOfRangeException(nameof(chunkElements));
        Groups = groups;
        Beta1 = beta1;
        Beta2 = beta2;
        ChunkElements = chunkElements;
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
                // empty: pages are touched slice by slice as the old parameter and gradient storage is released,
                // so flattening never holds two copies of the model; the momentum is allocated afterwards
                var flatP = torch.empty(total, ScalarType.Float32, dev).DetachFromDisposeScope();
                var flatG = torch.empty(total, ScalarType.Float32, dev).DetachFromDisposeScope();
                var gradViews = new Tensor[sizes.Length];
                for (int i = 0; i < sizes.Length; i++)
                {
                    var p = g.Params[i];
                    var pView = flatP.narrow(0, offsets[i], sizes[i]).view(p.shape);
                    pView.copy_(p);
                    p.set_(pView);   // the parameter now lives in the flat buffer
                    pView.Dispose();
                    var gView = flatG.narrow(0, offsets[i], sizes[i]).view(p.shape).DetachFromDisposeScope();
                    using (var old = p.grad)
                        if (old is not null) gView.copy_(old);
                        else gView.zero_();
                    p.grad = gView;
                    gradViews[i] = gView;
                }
                var flatM = torch.zeros(total, ScalarType.Float32, dev).DetachFromDisposeScope();
                _flat[gi] = new FlatGroup(g, flatP, flatG, flatM, offsets, sizes, gradViews);
            }
        _scratch = torch.empty(Math.Min(largest, chunkElements), ScalarType.Float32, device ?? torch.CPU).DetachFromDisposeScope();
    }

    /// <summary>One Lion update of every enabled group (parameters without a gradient are skipped).</summary>
    public void Step()
    {
        using var noGrad = torch.no_grad();
        using var scope = torch.NewDisposeScope();
        foreach (var f in _flat)
        {
            var g = f.Group;
            if (!g.Enabled) continue;
            var skipped = new List<(Tensor P, Tensor M, Tensor PSaved, Tensor MSaved)>();
            for (int i = 0; i < f.Sizes.Length; i++)
            {
                var p = g.Params[i];
                using var grad = p.grad;
                if (grad is null)
                {
                    var m = f.Momentum.narrow(0, f.Offsets[i], f.Sizes[i]);
                    skipped.Add((p, m, p.detach().clone(), m.clone()));
                    f.GradViews[i].zero_();
                    continue;
                }
                if (!SameMemory(grad, f.GradViews[i])) f.GradViews[i].copy_(grad);
            }
            if (skipped.Count == f.Sizes.Length) continue;
            f.Steps++;
            double lr = g.LearningRate, wd = g.WeightDecay;
            long total = f.Parameters.NumberOfElements;
            for (long start = 0; start < total; start += ChunkElements)
            {
                long n = Math.Min(ChunkElements, total - start);
                var p = f.Parameters.narrow(0, start, n);
                var grad = f.Grads.narrow(0, start, n);
                var m = f.Momentum.narrow(0, start, n);
                var c = _scratch.narrow(0, 0, n);
                if (wd != 0) p.mul_(1.0 - lr * wd);
                c.copy_(m).mul_(Beta1).add_(grad, alpha: 1.0 - Beta1).sign_();
                p.add_(c, alpha: -lr);
                m.mul_(Beta2).add_(grad, alpha: 1.0 - Beta2);
            }
            foreach (var (p, m, pSaved, mSaved) in skipped)
            {
                p.copy_(pSaved);
                m.copy_(mSaved);
            }
        }
    }

    static bool SameMemory(Tensor a, Tensor b)
    {
        if (a.dtype != ScalarType.Float32 || a.device.type != b.device.type || a.storage_offset() != b.storage_offset()) return false;
        using var sa = a.storage<float>();
        using var sb = b.storage<float>();
        return sa.data_ptr() == sb.data_ptr();
    }

    /// <summary>
    /// Zeroes every gradient in one kernel per group and re-installs the gradient views (a parameter whose
    /// gradient was set to none or replaced gets its view back), so the next backward accumulates in place.
    /// </summary>
    public void ZeroGrad()
    {
        using var noGrad = torch.no_grad();
        foreach (var f in _flat)
        {
            f.Grads.zero_();
            for (int i = 0; i < f.GradViews.Length; i++)
            {
                var p = f.Group.Params[i];
                using var grad = p.grad;
                if (grad is null || !SameMemory(grad, f.GradViews[i])) p.grad = f.GradViews[i];
            }
        }
    }

    /// <summary>Bytes of optimizer state (momentum) plus the flat gradient buffer and the scratch chunk.</summary>
    public long StateBytes => _flat.Sum(f => (f.Momentum.NumberOfElements + f.Grads.NumberOfElements) * 4) + _scratch.NumberOfElements * 4;

    /// <summary>Copies of the momentum per parameter (on CPU), keyed like <see cref="Lion"/>'s state.</summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var f in _flat)
        {
            if (f.Steps == 0) continue;
            for (int i = 0; i < f.Sizes.Length; i++)
            {
                string prefix = $"{f.Group.Name}/{i}/";
                d[prefix + "exp_avg"] = f.Momentum.narrow(0, f.Offsets[i], f.Sizes[i]).view(f.Group.Params[i].shape).cpu().clone();
                d[prefix + "step"] = torch.tensor(f.Steps, ScalarType.Int64);
            }
        }
        return d;
    }

    /// <summary>Loads momentum saved by <see cref="StateDict"/> or by <see cref="Lion"/> (same keys).</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        using var noGrad = torch.no_grad();
        foreach (var (key, t) in state)
        {
            var parts = key.Split('/');
            if (parts.Length != 3) throw new DreamBoothException($"optimizer state: malformed key '{key}'");
            int gi = Array.FindIndex(_flat, f => f.Group.Name == parts[0]);
            if (gi < 0) throw new DreamBoothException($"optimizer state: key '{key}' names no parameter group");
            var f = _flat[gi];
            if (!int.TryParse(parts[1], out int i) || i < 0 || i >= f.Sizes.Length)
                throw new DreamBoothException($"optimizer state: key '{key}' names no parameter");
            if (parts[2] == "step") { f.Steps = t.item<long>(); continue; }
            if (parts[2] != "exp_avg") throw new DreamBoothException($"optimizer state: Lion has no slot '{parts[2]}' ('{key}')");
            if (t.NumberOfElements != f.Sizes[i]) throw new DreamBoothException($"optimizer state: '{key}' has {t.NumberOfElements} values, expected {f.Sizes[i]}");
            f.Momentum.narrow(0, f.Offsets[i], f.Sizes[i]).copy_(t.reshape(-1));
        }
    }

    public void Dispose()
    {
        foreach (var f in _flat)
        {
            foreach (var v in f.GradViews) v.Dispose();
            f.Grads.Dispose();
            f.Momentum.Dispose();
            f.Parameters.Dispose();   // the parameters are views: they keep the storage alive
        }
        _scratch.Dispose();
    }
}
