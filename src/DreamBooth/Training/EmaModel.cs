using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>
/// Exponential moving average of weights: after each optimizer step
/// <c>ema ← d·ema + (1−d)·p</c>, with d = <see cref="Decay"/>, or with warm-up
/// d = min(decay, (1+s)/(10+s)) where s counts earlier updates. The fp32 shadow lives on the chosen device.
/// </summary>
public sealed class EmaModel : IDisposable
{
    readonly Dictionary<string, Tensor> _shadow = new();

    public double Decay { get; }
    public bool Warmup { get; }
    public long Updates { get; private set; }
    public Device Device { get; }
    public IReadOnlyDictionary<string, Tensor> Shadow => _shadow;

    public EmaModel(IEnumerable<(string Name, Tensor Param)> parameters, double decay, bool warmup, Device? device = null)
    {
        Decay = decay;
        Warmup = warmup;
        Device = device ?? torch.CPU;
        using var _ = torch.no_grad();
        foreach (var (name, p) in parameters)
            _shadow[name] = p.detach().to(ScalarType.Float32).to(Device, copy: true).DetachFromDisposeScope();
    }

    /// <summary>The decay used for the update after <paramref name="s"/> earlier updates.</summary>
    public double DecayAt(long s) => Warmup ? Math.Min(Decay, (1.0 + s) / (10.0 + s)) : Decay;

    public void Update(IEnumerable<(string Name, Tensor Param)> parameters)
    {
        double d = DecayAt(Updates);
        using var scope = torch.NewDisposeScope();
        using var _ = torch.no_grad();
        foreach (var (name, p) in parameters)
        {
            if (!_shadow.TryGetValue(name, out var e)) throw new InvalidOperationException($"EMA has no weight '{name}'");
            var src = p.detach().to(ScalarType.Float32).to(e.device);
            e.mul_(d).add_(src, alpha: 1.0 - d);
        }
        Updates++;
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
    }

    public void Dispose()
    {
        foreach (var t in _shadow.Values) t.Dispose();
        _shadow.Clear();
    }
}
