using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>
/// Exponential moving average of weights: after each optimizer step <c>ema ← lerp(ema, p, 1−d)</c>
/// (= d·ema + (1−d)·p, as diffusers' EMAModel and torch._foreach_lerp_), with d = <see cref="Decay"/>, or with
/// warm-up d = min(decay, (1+s)/(10+s)) where s counts earlier updates. The fp32 shadow is one flat buffer on
/// the chosen device (<see cref="Shadow"/> holds a view of it per weight). When the weights it follows are one
/// contiguous fp32 span on that device, in the shadow's order (the trainer's UNet masters inside the flattened
/// Lion's buffer), an update is a single lerp over the whole buffer; otherwise one lerp per weight. Both give the
/// same bits: the same kernel with the same weight tensor, element by element.
/// </summary>
public sealed class EmaModel : IDisposable
{
    readonly Tensor _flat;
    readonly string[] _names;
    readonly Dictionary<string, Tensor> _shadow = new();
    bool _countedLast;

    public double Decay { get; }
    public bool Warmup { get; }
    public long Updates { get; private set; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Tensor> Shadow => _shadow;

    /// <summary>Updates done as one lerp over the whole shadow (the followed weights were one flat span); for tests and benches.</summary>
    public long FlatUpdates { get; private set; }

    public EmaModel(IEnumerable<(string Name, Tensor Param)> parameters, double decay, bool warmup, Device? device = null)
    {
        Decay = decay;
        Warmup = warmup;
        Device = device ?? torch.CPU;
        var list = parameters.ToList();
        _names = list.Select(x => x.Name).ToArray();
        if (_names.Distinct().Count() != _names.Length) throw new ArgumentException("EMA weight names must be unique");
        using var _ = torch.no_grad();
        _flat = torch.empty(list.Sum(x => x.Param.NumberOfElements), ScalarType.Float32, Device).DetachFromDisposeScope();
        long offset = 0;
        foreach (var (name, p) in list)
        {
            var view = _flat.narrow(0, offset, p.NumberOfElements).view(p.shape).DetachFromDisposeScope();
            using (var src = p.detach()) view.copy_(src);
            _shadow[name] = view;
            offset += p.NumberOfElements;
        }
    }

    /// <summary>The decay used for the update after <paramref name="s"/> earlier updates.</summary>
    public double DecayAt(long s) => Warmup ? Math.Min(Decay, (1.0 + s) / (10.0 + s)) : Decay;

    public void Update(IEnumerable<(string Name, Tensor Param)> parameters) => Update(parameters, apply: null);

    /// <summary>
    /// One EMA step toward <paramref name="parameters"/>. With <paramref name="apply"/> (a 0-dim bool tensor) the lerp
    /// weight is 1−d where it holds and 0 where it does not (the shadow keeps its values): queued without a host read;
    /// call <see cref="StepWasSkipped"/> once the host knows it was false.
    /// </summary>
    public void Update(IEnumerable<(string Name, Tensor Param)> parameters, Tensor? apply)
    {
        double d = DecayAt(Updates);
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        var weight = torch.full(Array.Empty<long>(), 1.0 - d, ScalarType.Float32, Device);
        if (apply is not null) weight = torch.where(apply.to(Device), weight, torch.zeros_like(weight));
        var list = parameters as IReadOnlyList<(string Name, Tensor Param)> ?? parameters.ToList();
        if (SpanOf(list) is { } span)
        {
            _flat.lerp_(span, weight);
            FlatUpdates++;
        }
        else
            foreach (var (name, p) in list)
            {
                if (!_shadow.TryGetValue(name, out var e)) throw new InvalidOperationException($"EMA has no weight '{name}'");
                e.lerp_(p.detach().to(ScalarType.Float32).to(e.device), weight);
            }
        Updates++;
        _countedLast = true;
    }

    /// <summary>The last conditional <see cref="Update(IEnumerable{ValueTuple{string, Tensor}}, Tensor?)"/> did not apply: it does not count (warm-up decay).</summary>
    public void StepWasSkipped()
    {
        if (!_countedLast) throw new InvalidOperationException("no EMA update to take back");
        Updates--;
        _countedLast = false;
    }

    /// <summary>
    /// A 1-D view over <paramref name="list"/>'s values when they are the shadow's weights in its order and lie end to
    /// end in one contiguous fp32 storage on the shadow's device; else null.
    /// </summary>
    Tensor? SpanOf(IReadOnlyList<(string Name, Tensor Param)> list)
    {
        if (list.Count != _names.Length || list.Count == 0) return null;
        var first = list[0].Param;
        if (first.device.type != Device.type || first.device.index != Device.index || first.device.type == DeviceType.META) return null;
        IntPtr data = IntPtr.Zero;
        long next = first.storage_offset();
        for (int i = 0; i < list.Count; i++)
        {
            var (name, p) = list[i];
            if (name != _names[i] || p.dtype != ScalarType.Float32 || !p.is_contiguous() || p.storage_offset() != next) return null;
            if (p.device.type != first.device.type || p.device.index != first.device.index) return null;
            using var storage = p.storage<float>();
            if (i == 0) data = storage.data_ptr();
            else if (storage.data_ptr() != data) return null;
            next += p.NumberOfElements;
        }
        if (next - first.storage_offset() != _flat.NumberOfElements) return null;
        return first.detach().as_strided([_flat.NumberOfElements], [1], first.storage_offset());
    }

    /// <summary>
    /// The state, keyed <c>ema/{name}</c> and <c>ema_updates</c>: CPU copies (<paramref name="copy"/>), or handles to the
    /// shadow tensors themselves (no second copy of the 3.4 GB EMA in memory while a state file is written). The caller
    /// disposes the returned tensors either way (disposing a handle leaves the shadow alone).
    /// </summary>
    public Dictionary<string, Tensor> StateDict(bool copy = true)
    {
        var d = _shadow.ToDictionary(kv => "ema/" + kv.Key, kv => copy ? kv.Value.detach().cpu().clone() : kv.Value.detach());
        d["ema_updates"] = torch.tensor(Updates, ScalarType.Int64);
        return d;
    }

    /// <summary>The shadow tensors by state key (<c>ema/{name}</c>), for reading a state file straight into them (<see cref="TensorStateFile.Load(string, Func{string, Tensor?})"/>).</summary>
    public IReadOnlyDictionary<string, Tensor> StateTargets => _shadow.ToDictionary(kv => "ema/" + kv.Key, kv => kv.Value);

    /// <summary>
    /// Restores the shadow from <paramref name="state"/> (keys of <see cref="StateDict"/>); the keys in
    /// <paramref name="alreadyRead"/> were read straight into the shadow (<see cref="StateTargets"/>) and are not looked up.
    /// </summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, IReadOnlySet<string>? alreadyRead = null)
    {
        using var _ = torch.no_grad();
        foreach (var (name, e) in _shadow)
        {
            if (alreadyRead?.Contains("ema/" + name) == true) continue;
            if (!state.TryGetValue("ema/" + name, out var t)) throw new DreamBoothException($"training state: EMA weight 'ema/{name}' is missing");
            if (!t.shape.SequenceEqual(e.shape)) throw new DreamBoothException($"training state: EMA weight '{name}' has shape [{string.Join(",", t.shape)}], expected [{string.Join(",", e.shape)}]");
            e.copy_(t);
        }
        if (!state.TryGetValue("ema_updates", out var u)) throw new DreamBoothException("training state: 'ema_updates' is missing");
        Updates = u.item<long>();
        _countedLast = false;
    }

    public void Dispose()
    {
        foreach (var t in _shadow.Values) t.Dispose();
        _shadow.Clear();
        _flat.Dispose();
    }
}
