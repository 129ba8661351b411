using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// An optimizer that updates one parameter tensor at a time (<see cref="Lion"/>, <see cref="AdamW"/>,
/// <see cref="AdamW8bit"/>): state tensors and a step counter per parameter, created on its first update.
/// </summary>
public abstract class PerTensorOptimizer : TrainingOptimizer
{
    readonly Dictionary<(int Group, int Index), Dictionary<string, Tensor>> _state = new();
    readonly Dictionary<(int Group, int Index), long> _steps = new();

    protected PerTensorOptimizer(IReadOnlyList<ParamGroup> groups) : base(groups) { }

    public override void Step(Tensor? apply)
    {
        if (apply is not null)
            throw new NotSupportedException($"{GetType().Name} steps per tensor and cannot skip on the device: decide on the host, then call Step()");
        using var _ = torch.no_grad();
        for (int gi = 0; gi < Groups.Count; gi++)
        {
            var g = Groups[gi];
            if (!g.Enabled) continue;
            for (int i = 0; i < g.Params.Count; i++)
            {
                var p = g.Params[i];
                using var grad = p.grad;
                if (grad is null) continue;
                using var scope = torch.NewDisposeScope();
                var key = (gi, i);
                if (!_state.TryGetValue(key, out var st))
                {
                    st = new Dictionary<string, Tensor>();
                    InitState(p, st);
                    _state[key] = st;
                }
                long t = _steps.GetValueOrDefault(key) + 1;
                _steps[key] = t;
                StepParameter(p, grad, st, t, g.LearningRate, g.WeightDecay);
            }
        }
    }

    /// <summary>Creates the (detached, long-lived) state tensors of one parameter.</summary>
    protected abstract void InitState(Tensor p, Dictionary<string, Tensor> state);

    /// <summary>Updates <paramref name="p"/> in place (no_grad and a dispose scope are active).</summary>
    protected abstract void StepParameter(Tensor p, Tensor grad, Dictionary<string, Tensor> state, long step, double lr, double weightDecay);

    public override void DropState(string groupName)
    {
        int gi = IndexOf(groupName);
        foreach (var key in _state.Keys.Where(k => k.Group == gi).ToList())
        {
            foreach (var t in _state[key].Values) t.Dispose();
            _state.Remove(key);
            _steps.Remove(key);
        }
    }

    public override long StateBytes => _state.Values.SelectMany(d => d.Values).Sum(t => t.NumberOfElements * t.ElementSize);

    public override Dictionary<string, Tensor> StateDict(bool copy = true)
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var ((gi, i), st) in _state)
        {
            string prefix = $"{Groups[gi].Name}/{i}/";
            foreach (var (slot, t) in st) d[prefix + slot] = copy ? t.detach().cpu().clone() : t.detach();
            d[prefix + "step"] = torch.tensor(_steps[(gi, i)], ScalarType.Int64);
        }
        return d;
    }

    /// <summary>Tensors are copied to each parameter's device.</summary>
    public override void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var st in _state.Values) foreach (var t in st.Values) t.Dispose();
        _state.Clear();
        _steps.Clear();
        foreach (var (key, t) in state)
        {
            var parts = key.Split('/');
            if (parts.Length != 3) throw new DreamBoothException($"optimizer state: malformed key '{key}'");
            int gi = Array.FindIndex(Groups.ToArray(), g => g.Name == parts[0]);
            if (gi < 0) throw new DreamBoothException($"optimizer state: key '{key}' names no parameter group");
            if (!int.TryParse(parts[1], out int i) || i < 0 || i >= Groups[gi].Params.Count)
                throw new DreamBoothException($"optimizer state: key '{key}' names no parameter");
            var p = Groups[gi].Params[i];
            if (parts[2] == "step") { _steps[(gi, i)] = t.item<long>(); continue; }
            if (!_state.TryGetValue((gi, i), out var st)) _state[(gi, i)] = st = new Dictionary<string, Tensor>();
            st[parts[2]] = t.detach().to(p.device).clone().DetachFromDisposeScope();
        }
        foreach (var k in _state.Keys)
            if (!_steps.ContainsKey(k)) throw new DreamBoothException($"optimizer state: '{Groups[k.Group].Name}/{k.Index}' has no step counter");
    }

    protected override void Dispose(bool disposing)
    {
        foreach (var st in _state.Values) foreach (var t in st.Values) t.Dispose();
        _state.Clear();
    }
}
