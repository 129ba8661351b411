using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), decoupled weight decay:
/// <code>
/// p ← p·(1 − lr·wd)
/// p ← p − lr·sign(β1·m + (1−β1)·g)
/// m ← β2·m + (1−β2)·g
/// </code>
/// One state tensor (m) per parameter.
/// </summary>
public sealed class Lion : PerTensorOptimizer
{
    public double Beta1 { get; }
    public double Beta2 { get; }

    public Lion(IReadOnlyList<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.99) : base(groups)
    {
        Beta1 = beta1;
        Beta2 = beta2;
    }

    protected override void InitState(Tensor p, Dictionary<string, Tensor> state) =>
        state["exp_avg"] = Persistent(torch.zeros_like(p));

    protected override void StepParameter(Tensor p, Tensor grad, Dictionary<string, Tensor> state, long step, double lr, double weightDecay)
    {
        var m = state["exp_avg"];
        if (weightDecay != 0) p.mul_(1.0 - lr * weightDecay);
        var update = m.mul(Beta1).add_(grad, alpha: 1.0 - Beta1).sign_();
        p.add_(update, alpha: -lr);
        m.mul_(Beta2).add_(grad, alpha: 1.0 - Beta2);
    }
}
