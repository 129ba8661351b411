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
/// Optimizer over fp32 (master) parameters with per-group LR/WD. Reads each parameter's <c>.grad</c> and updates it in
/// place under no_grad. State is addressed per parameter as <c>{group}/{index}/{slot}</c> (+ <c>/step</c>) for saving
/// and resuming, whatever the implementation keeps in memory: <see cref="PerTensorOptimizer"/> (Lion, AdamW, AdamW
/// 8-bit: a few kernels per parameter tensor) or <see cref="FlatLion"/> (the trainer's "lion": flattened buffers).
/// </summary>
public abstract class TrainingOptimizer : IDisposable
{
    public IReadOnlyList<ParamGroup> Groups { get; }

    protected TrainingOptimizer(IReadOnlyList<ParamGroup> groups)
    {
        if (groups.Select(g => g.Name).Distinct().Count() != groups.Count)
            throw new ArgumentException("parameter group names must be unique");
        Groups = groups;
    }

    /// <summary>
    /// The optimizer a config names: "lion" is <see cref="FlatLion"/> (bitwise the per-tensor <see cref="Lion"/>, over
    /// flattened buffers, and it can skip a step on the device); "adamw" and "adamw8bit" step per tensor.
    /// </summary>
    public static TrainingOptimizer Create(string name, IReadOnlyList<ParamGroup> groups) => name switch
    {
        "lion" => new FlatLion(groups),
        "adamw" => new AdamW(groups),
        "adamw8bit" => new AdamW8bit(groups),
        _ => throw new DreamBoothException($"optimizer = \"{name}\" is not one of: {string.Join(", ", TrainingConfig.Optimizers)}"),
    };

    /// <summary>One update of every enabled group's parameters that have a gradient.</summary>
    public void Step() => Step(apply: null);

    /// <summary>
    /// One update. With <paramref name="apply"/> (a 0-dim bool tensor on the parameters' device) the update is queued
    /// without reading anything back and takes effect only where it holds true: when false, parameters and state keep
    /// every bit (the trainer's finite check, decided on the device). Only optimizers with
    /// <see cref="CanSkipOnDevice"/> accept it; the host learns the outcome later and calls
    /// <see cref="StepWasSkipped"/> when it was false.
    /// </summary>
    public abstract void Step(Tensor? apply);

    /// <summary>Whether <see cref="Step(Tensor?)"/> accepts a device-side condition (else the caller decides on the host first).</summary>
    public virtual bool CanSkipOnDevice => false;

    /// <summary>The last <see cref="Step(Tensor?)"/> with a condition turned out false: its step counts are taken back.</summary>
    public virtual void StepWasSkipped() =>
        throw new NotSupportedException($"{GetType().Name} does not step conditionally on the device");

    /// <summary>
    /// Makes sure every parameter of the enabled groups has a gradient tensor to be written into (the flattened
    /// optimizer's views; per-tensor optimizers need nothing), so gradients can be copied in place.
    /// </summary>
    public virtual void AttachGradients() { }

    /// <summary>Multiplies the gradients of group <paramref name="group"/> by the 0-dim device tensor <paramref name="factor"/> (clipping without a host read).</summary>
    public virtual void ScaleGradients(int group, Tensor factor)
    {
        using var _ = torch.no_grad();
        foreach (var p in Groups[group].Params) { using var g = p.grad; g?.mul_(factor); }
    }

    /// <summary>Releases every gradient of every group (set to none; the flattened optimizer may keep its buffer).</summary>
    public virtual void ZeroGrad()
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
    public abstract void DropState(string groupName);

    protected int IndexOf(string groupName)
    {
        for (int i = 0; i < Groups.Count; i++) if (Groups[i].Name == groupName) return i;
        throw new ArgumentException($"no parameter group '{groupName}'");
    }

    /// <summary>
    /// Bytes of state <paramref name="name"/> keeps for parameters of these element counts (what <see cref="StateBytes"/>
    /// reports once every parameter has stepped, and what a training state stores): Lion one fp32 momentum, AdamW two,
    /// AdamW 8-bit one byte per moment value (padded to whole blocks) plus one fp32 absmax per block and moment, fp32
    /// for tensors below its threshold.
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

    /// <summary>True when <see cref="Create"/> makes an optimizer whose state a resume reads straight into place (<see cref="StateTargets"/>).</summary>
    public static bool ReadsStateInPlace(string name) => name == "lion";

    /// <summary>Bytes held by optimizer state (for memory reports and the 8-bit test).</summary>
    public abstract long StateBytes { get; }

    /// <summary>
    /// The state tensors keyed <c>{group}/{index}/{slot}</c>, step counters as <c>/step</c>: CPU copies (<paramref name="copy"/>),
    /// or handles to (views of) the state tensors themselves (no second copy of the optimizer state in memory while a state
    /// file is written). The caller disposes the returned tensors either way (disposing a handle leaves the state alone).
    /// </summary>
    public abstract Dictionary<string, Tensor> StateDict(bool copy = true);

    /// <summary>Replaces the state with <paramref name="state"/> (keys from <see cref="StateDict"/> of any implementation of the same algorithm).</summary>
    public abstract void LoadStateDict(IReadOnlyDictionary<string, Tensor> state);

    /// <summary>
    /// Where a state file may be read straight into the optimizer's own state (keys as <see cref="StateDict"/>): handles to
    /// that state, reset to zero here, so a resume holds it once instead of once in the file's copy and once in place.
    /// Empty for optimizers that allocate their state per tensor as they load it. The caller disposes the handles.
    /// </summary>
    public virtual Dictionary<string, Tensor> StateTargets() => new();

    /// <summary>
    /// <see cref="LoadStateDict(IReadOnlyDictionary{string, Tensor})"/> after the tensors named in <paramref name="alreadyRead"/>
    /// were read into <see cref="StateTargets"/>: <paramref name="state"/> holds the rest (step counters, and any slot
    /// the targets did not take).
    /// </summary>
    public virtual void LoadStateDict(IReadOnlyDictionary<string, Tensor> state, IReadOnlySet<string> alreadyRead)
    {
        if (alreadyRead.Count > 0) throw new InvalidOperationException($"{GetType().Name} has no state targets, yet {alreadyRead.Count} tensors were read into them");
        LoadStateDict(state);
    }

    public void Dispose()
    {
        Dispose(true);
        GC.SuppressFinalize(this);
    }

    protected virtual void Dispose(bool disposing) { }

    protected static Tensor Persistent(Tensor t) => t.DetachFromDisposeScope();
}
