using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// A group of parameters sharing LR and weight decay (the UNet group and the text-encoder group are
/// separate groups, so "TE LR" and "TE weight decay" really act). <see cref="LearningRate"/> is the
/// current LR (the schedule sets it each step); <see cref="Enabled"/> = false skips the group.
/// </summary>
public sealed class ParamGroup
{
    public string Name { get; }
    public IReadOnlyList<Tensor> Params { get; }
    public double BaseLearningRate { get; }
    public double LearningRate { get; set; }
    public double WeightDecay { get; set; }
    public bool Enabled { get; set; } = true;

    public ParamGroup(string name, IReadOnlyList<Tensor> parameters, double learningRate, double weightDecay)
    {
        Name = name;
        Params = parameters;
        BaseLearningRate = learningRate;
        LearningRate = learningRate;
        WeightDecay = weightDecay;
    }
}

/// <summary>
/// Optimizer over fp32 (master) parameters with per-group LR/WD. Reads each parameter's <c>.grad</c>,
/// updates it in place under no_grad. State is per parameter, addressed as <c>{group}/{index}/{slot}</c>
/// for saving and resuming.
/// </summary>
public abstract class TrainingOptimizer : IDisposable
{
    readonly Dictionary<(int Group, int Index), Dictionary<string, Tensor>> _state = new();
    readonly Dictionary<(int Group, int Index), long> _steps = new();

    public IReadOnlyList<ParamGroup> Groups { get; }

    protected TrainingOptimizer(IReadOnlyList<ParamGroup> groups)
    {
        if (groups.Select(g => g.Name).Distinct().Count() != groups.Count)
            throw new ArgumentException("parameter group names must be unique");
        Groups = groups;
    }

    public static TrainingOptimizer Create(string name, IReadOnlyList<ParamGroup> groups) => name switch
    {
        "lion" => new Lion(groups),
        "adamw" => new AdamW(groups),
        "adamw8bit" => new AdamW8bit(groups),
        _ => throw new DreamBoothException($"optimizer = \"{name}\" is not one of: {string.Join(", ", TrainingConfig.Optimizers)}"),
    };

    /// <summary>One update of every enabled group's parameters that have a gradient.</summary>
    public void Step()
    {
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

    /// <summary>Sets every gradient of every group to none (frees the memory).</summary>
    public void ZeroGrad()
    {
        foreach (var g in Groups)
            foreach (var p in g.Params)
                ClearGrad(p);
    }

    internal static void ClearGrad(Tensor p)
    {
        using var grad = p.grad;
        if (grad is not null) p.grad = null;
    }

    /// <summary>Frees the state of a group (the TE after it stops training keeps no optimizer state).</summary>
    public void DropState(string groupName)
    {
        int gi = IndexOf(groupName);
        foreach (var key in _state.Keys.Where(k => k.Group == gi).ToList())
        {
            foreach (var t in _state[key].Values) t.Dispose();
            _state.Remove(key);
            _steps.Remove(key);
        }
    }

    int IndexOf(string groupName)
    {
        for (int i = 0; i < Groups.Count; i++) if (Groups[i].Name == groupName) return i;
        throw new ArgumentException($"no parameter group '{groupName}'");
    }

    /// <summary>
    /// Bytes of state <paramref name="name"/> keeps for parameters of these element counts (what <see cref="StateBytes"/>
    /// reports once every parameter has stepped): Lion one fp32 momentum, AdamW two, AdamW 8-bit one byte per moment
    /// value (padded to whole blocks) plus one fp32 absmax per block and moment, fp32 for tensors below its threshold.
    /// </summary>
    public static long StateBytesFor(string name, IEnumerable<long> parameterSizes) => name switch
    {
        "lion" => parameterSizes.Sum(n => 4 * n),
        "adamw" => parameterSizes.Sum(n => 8 * n),
        "adamw8bit" => parameterSizes.Sum(n =>
        {
            if (n < AdamW8bit.MinQuantizedSize) return 8 * n;
            long blocks = (n + BlockwiseQuantizer.BlockSize - 1) / BlockwiseQuantizer.BlockSize;
            return 2 * (blocks * BlockwiseQuantizer.BlockSize + 4 * blocks);
        }),
        _ => throw new DreamBoothException($"optimizer = \"{name}\" is not one of: {string.Join(", ", TrainingConfig.Optimizers)}"),
    };

    /// <summary>Bytes held by optimizer state (for memory reports and the 8-bit test).</summary>
    public long StateBytes => _state.Values.SelectMany(d => d.Values).Sum(t => t.NumberOfElements * t.ElementSize);

    /// <summary>Copies of the state tensors (on CPU), keyed <c>{group}/{index}/{slot}</c>; step counters as <c>/step</c>.</summary>
    public Dictionary<string, Tensor> StateDict()
    {
        var d = new Dictionary<string, Tensor>();
        foreach (var ((gi, i), st) in _state)
        {
            string prefix = $"{Groups[gi].Name}/{i}/";
            foreach (var (slot, t) in st) d[prefix + slot] = t.detach().cpu().clone();
            d[prefix + "step"] = torch.tensor(_steps[(gi, i)], ScalarType.Int64);
        }
        return d;
    }

    /// <summary>Replaces the state with <paramref name="state"/> (keys from <see cref="StateDict"/>); tensors are copied to each parameter's device.</summary>
    public void LoadStateDict(IReadOnlyDictionary<string, Tensor> state)
    {
        foreach (var st in _state.Values) foreach (var t in st.Values) t.Dispose();
        _state.Clear();
        _steps.Clear();
        foreach (var (key, t) in state)
        {
            var parts = key.Split('/');
            if (parts.Length != 3) throw new DreamBoothException($"optimizer state: malformed key '{key}'");
            int gi = IndexOf(parts[0]);
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

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing)
    {
        foreach (var st in _state.Values) foreach (var t in st.Values) t.Dispose();
        _state.Clear();
    }

    protected static Tensor Persistent(Tensor t) => t.DetachFromDisposeScope();
}
