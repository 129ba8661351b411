using TorchSharp;
using static TorchSharp.torch;
using static TorchSharp.torch.nn;
using Parameter = TorchSharp.Modules.Parameter;

namespace DreamBooth.Training;

/// <summary>
/// Mixed precision by hand (TorchSharp has no autocast): the module holds a compute copy in
/// bf16/fp16 for forward/backward, and this class holds fp32 master weights that the optimizer steps.
/// After backward, <see cref="CopyGradsToMasters"/> puts (unscaled) fp32 grads on the masters; after the
/// optimizer step, <see cref="CopyMastersToModel"/> rounds the masters back into the compute copy.
/// At LR 1e-7 a bf16 weight (resolution ~4e-5 near 0.01) would never move; the fp32 master does.
/// With fp32 compute the masters are the module's own parameters (no copy).
/// </summary>
public sealed class MasterWeights : IDisposable
{
    readonly Module _module;
    readonly string[] _names;
    readonly Tensor[] _masters;
    readonly bool _shared;

    public ScalarType ComputeDtype { get; }
    /// <summary>fp32 master tensors, in the order of <see cref="Names"/> (leaf tensors; the optimizer reads their <c>.grad</c>).</summary>
    public IReadOnlyList<Tensor> Masters => _masters;
    public IReadOnlyList<string> Names => _names;

    /// <summary>
    /// Captures fp32 masters of the trainable parameters of <paramref name="module"/> (which must still be
    /// fp32, so nothing is lost), then converts the module to <paramref name="computeDtype"/>.
    /// <paramref name="include"/> selects parameters by name (default: those with requires_grad).
    /// </summary>
    public MasterWeights(Module module, ScalarType computeDtype, Func<string, Parameter, bool>? include = null)
    {
        _module = module;
        ComputeDtype = computeDtype;
        include ??= (_, p) => p.requires_grad;
        var selected = module.named_parameters().Where(kv => include(kv.name, kv.parameter)).ToList();
        foreach (var (name, p) in selected)
            if (p.dtype != ScalarType.Float32)
                throw new InvalidOperationException($"master weights must be captured from fp32 parameters ('{name}' is {p.dtype})");
        _names = selected.Select(kv => kv.name).ToArray();
        _shared = computeDtype == ScalarType.Float32;
        if (_shared)
        {
            _masters = selected.Select(kv => (Tensor)kv.parameter).ToArray();
            return;
        }
        // the masters keep the fp32 parameters' own storage (detach shares it; no copy) and the module gets new compute
        // tensors: with a clone the loaded fp32 storage stayed alive beside the masters (a second fp32 copy of the model,
        // 3.9 GB at SD1.5 size), and a full-size resume on 23 GB was killed for memory (docs/memory.md)
        using (torch.no_grad())
            _masters = selected.Select(kv => kv.parameter.detach().DetachFromDisposeScope()).ToArray();
        module.to(computeDtype);
    }

    Parameter[] ComputeParams()
    {
        var all = _module.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter);
        return _names.Select(n => all[n]).ToArray();
    }

    /// <summary>
    /// Moves the compute copy's gradients onto the fp32 masters, multiplied by <paramref name="invScale"/>
    /// (1/loss scale for fp16), without looking at them (no host read); compute grads are released. A master that
    /// already has a gradient tensor (the flattened optimizer's view, <see cref="Optimizers.TrainingOptimizer.AttachGradients"/>)
    /// gets the values written into it; otherwise a new one is assigned. With fp32 compute the masters are the
    /// parameters and their grads are only scaled. Check them with <see cref="GradientClipping.MoveGradsAndNorms"/>.
    /// </summary>
    public void MoveGradsToMasters(double invScale = 1.0)
    {
        using var _ = torch.no_grad();
        if (_shared)
        {
            if (invScale != 1.0)
                foreach (var m in _masters) { using var g = m.grad; g?.mul_(invScale); }
            return;
        }
        var compute = ComputeParams();
        for (int i = 0; i < compute.Length; i++)
        {
            using var g = compute[i].grad;
            if (g is null) { Optimizers.TrainingOptimizer.ClearGrad(_masters[i]); continue; }
            using var existing = _masters[i].grad;
            if (existing is not null)
            {
                existing.copy_(g);
                if (invScale != 1.0) existing.mul_(invScale);
            }
            else
            {
                var g32 = g.to(ScalarType.Float32, copy: true);
                if (invScale != 1.0) g32.mul_(invScale);
                _masters[i].grad = g32;
                g32.Dispose();
            }
            compute[i].grad = null;
        }
    }

    /// <summary>
    /// Moves the gradients onto the masters (<see cref="MoveGradsToMasters"/>) and checks them with one host read (their
    /// total norm, <see cref="GradientClipping.MoveGradsAndNorms"/>). Returns false (and leaves no master grads) if any
    /// gradient is inf/NaN.
    /// </summary>
    public bool CopyGradsToMasters(double invScale = 1.0)
    {
        var norms = GradientClipping.MoveGradsAndNorms([this], [_masters], invScale);
        if (double.IsFinite(norms[0])) return true;
        foreach (var m in _masters) Optimizers.TrainingOptimizer.ClearGrad(m);
        return false;
    }

    /// <summary>Rounds the fp32 masters into the compute copy (after each optimizer step).</summary>
    public void CopyMastersToModel()
    {
        if (_shared) return;
        var compute = ComputeParams();
        using var _ = torch.no_grad();
        for (int i = 0; i < compute.Length; i++) compute[i].copy_(_masters[i]);
    }

    public void Dispose()
    {
        if (!_shared) foreach (var m in _masters) m.Dispose();
    }

    public static ScalarType DtypeOf(string mixedPrecision) => mixedPrecision switch
    {
        "bf16" => ScalarType.BFloat16,
        "fp16" => ScalarType.Float16,
        "no" => ScalarType.Float32,
        _ => throw new DreamBoothException($"mixed_precision = \"{mixedPrecision}\" is not one of: no, fp16, bf16"),
    };
}

/// <summary>
/// Dynamic loss scaling for fp16 (PyTorch GradScaler's rule): multiply the loss by <see cref="Scale"/>;
/// on an inf/NaN gradient skip the step and halve the scale; after <see cref="GrowthInterval"/> clean
/// steps double it. bf16 and fp32 use a fixed scale of 1.
/// </summary>
public sealed class LossScaler
{
    public double Scale { get; private set; }
    public bool Enabled { get; }
    public int GrowthInterval { get; }
    public int CleanSteps { get; private set; }

    public LossScaler(bool enabled, double initialScale = 65536.0, int growthInterval = 2000)
    {
        Enabled = enabled;
        Scale = enabled ? initialScale : 1.0;
        GrowthInterval = growthInterval;
    }

    /// <summary>Records the outcome of a step: false = gradients overflowed (step skipped).</summary>
    public void Update(bool gradsFinite)
    {
        if (!Enabled) return;
        if (!gradsFinite) { Scale = Math.Max(1.0, Scale * 0.5); CleanSteps = 0; return; }
        if (++CleanSteps >= GrowthInterval) { Scale *= 2.0; CleanSteps = 0; }
    }

    internal void Restore(double scale, int cleanSteps) { Scale = scale; CleanSteps = cleanSteps; }
}

public static class GradientClipping
{
    /// <summary>
    /// Total L2 norm of the gradients of <paramref name="parameters"/>; when <paramref name="maxNorm"/> &gt; 0
    /// and the norm exceeds it, the gradients are scaled by maxNorm/(norm+1e-6) (PyTorch's clip_grad_norm_).
    /// </summary>
    public static double ClipGradNorm(IEnumerable<Tensor> parameters, double maxNorm)
    {
        using var scope = torch.NewDisposeScope();
        var ps = parameters.ToList();
        var total = NormTensor(ps);
        if (total is null) return 0.0;
        double norm = HostRead.Floats(total.reshape(1))[0];
        Clip(ps, norm, maxNorm);
        return norm;
    }

    /// <summary>
    /// The training step's one look at its gradients: moves each <paramref name="masters"/>' compute gradients onto its fp32
    /// masters (× <paramref name="invScale"/>, no read), computes the total L2 norm of each group of <paramref name="groups"/>
    /// on the device, and reads all the norms back in one transfer (0 for a group without gradients). A norm is inf/NaN
    /// when a gradient of its group is (fp16 overflow; NaN and inf propagate through the sum of squares), so the norms
    /// are the finite check too: no separate isfinite pass over the gradients and no read per tensor. (A finite gradient
    /// above ~1e19, whose square overflows fp32, also reads as non-finite: the step is skipped, as it should be.)
    /// </summary>
    public static double[] MoveGradsAndNorms(IEnumerable<MasterWeights> masters, IReadOnlyList<IEnumerable<Tensor>> groups, double invScale)
    {
        using var scope = torch.NewDisposeScope();
        var host = HostRead.Floats(MoveGradsAndNormsOnDevice(masters, groups, invScale));
        return host.Select(x => (double)x).ToArray();
    }

    /// <summary>
    /// <see cref="MoveGradsAndNorms"/> without the read: the groups' norms as one fp32 tensor [groups] on the device
    /// (0 for a group without gradients), for a step that decides on the device.
    /// </summary>
    public static Tensor MoveGradsAndNormsOnDevice(IEnumerable<MasterWeights> masters, IReadOnlyList<IEnumerable<Tensor>> groups, double invScale)
    {
        foreach (var m in masters) m.MoveGradsToMasters(invScale);
        using var scope = torch.NewDisposeScope();
        Device? device = null;
        var norms = groups.Select(g => { var n = NormTensor(g); device ??= n?.device; return n; }).ToList();
        var zero = torch.zeros(1, device: device ?? torch.CPU);
        return torch.cat(norms.Select(n => n?.reshape(1) ?? zero).ToArray()).MoveToOuterDisposeScope();
    }

    /// <summary>
    /// PyTorch's clip_grad_norm_ factor, on the device: maxNorm/(norm+1e-6) when the fp32 <paramref name="norm"/> exceeds
    /// <paramref name="maxNorm"/>, else 1 (also for a non-finite norm), as a 0-dim fp64 tensor. Computed in fp64 from the
    /// fp32 norm, the value <see cref="Clip"/> computes on the host, so multiplying a gradient by it gives the same bits.
    /// </summary>
    public static Tensor ClipFactor(Tensor norm, double maxNorm)
    {
        using var scope = torch.NewDisposeScope();
        var n = norm.to(ScalarType.Float64);
        var max = torch.full(Array.Empty<long>(), maxNorm, ScalarType.Float64, norm.device);
        return torch.where(n.gt(maxNorm), max / (n + 1e-6), torch.ones_like(n)).MoveToOuterDisposeScope();
    }

    /// <summary>The total L2 norm (fp32, on the device, not read back) of the gradients; null when none has a gradient.</summary>
    public static Tensor? NormTensor(IEnumerable<Tensor> parameters)
    {
        using var _ = torch.no_grad();
        var norms = new List<Tensor>();
        foreach (var p in parameters) { using var g = p.grad; if (g is not null) norms.Add(g.to(ScalarType.Float32).norm()); }
        return norms.Count == 0 ? null : torch.stack(norms).norm();
    }

    /// <summary>Scales the gradients by maxNorm/(norm+1e-6) when <paramref name="maxNorm"/> &gt; 0 and <paramref name="norm"/> exceeds it.</summary>
    public static void Clip(IEnumerable<Tensor> parameters, double norm, double maxNorm)
    {
        if (!(maxNorm > 0 && norm > maxNorm)) return;
        using var _ = torch.no_grad();
        double coef = maxNorm / (norm + 1e-6);
        foreach (var p in parameters) { using var g = p.grad; g?.mul_(coef); }
    }
}

/// <summary>
/// Device → host reads of the training step go through here, so a test can count them (the step reads its
/// gradient check and both grad norms in one transfer, whatever the number of gradient tensors).
/// </summary>
public static class HostRead
{
    [ThreadStatic] static long _count;

    /// <summary>Reads made on this thread so far.</summary>
    public static long Count => _count;

    /// <summary>Copies a float32 tensor to the host (one transfer).</summary>
    public static float[] Floats(Tensor t)
    {
        _count++;
        using var c = t.detach().cpu();
        return c.data<float>().ToArray();
    }
}
