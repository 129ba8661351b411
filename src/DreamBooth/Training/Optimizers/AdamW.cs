using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// AdamW (Loshchilov &amp; Hutter), PyTorch's formulation:
/// <code>
/// p ← p·(1 − lr·wd)
/// m ← β1·m + (1−β1)·g ;  v ← β2·v + (1−β2)·g²
/// p ← p − lr/(1−β1ᵗ) · m / (√v/√(1−β2ᵗ) + ε)
/// </code>
/// </summary>
public sealed class AdamW : PerTensorOptimizer
{
    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }

    public AdamW(IReadOnlyList<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8) : base(groups)
    {
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
    }

    protected override void InitState(Tensor p, Dictionary<string, Tensor> state)
    {
        state["exp_avg"] = Persistent(torch.zeros_like(p));
        state["exp_avg_sq"] = Persistent(torch.zeros_like(p));
    }

    protected override void StepParameter(Tensor p, Tensor grad, Dictionary<string, Tensor> state, long step, double lr, double weightDecay)
    {
        var m = state["exp_avg"];
        var v = state["exp_avg_sq"];
        if (weightDecay != 0) p.mul_(1.0 - lr * weightDecay);
        m.mul_(Beta1).add_(grad, alpha: 1.0 - Beta1);
        v.mul_(Beta2).addcmul_(grad, grad, value: 1.0 - Beta2);
        Update(p, m, v, step, lr, Beta1, Beta2, Epsilon);
    }

    /// <summary>The bias-corrected Adam update, shared with the 8-bit variant.</summary>
    internal static void Update(Tensor p, Tensor m, Tensor v, long step, double lr, double beta1, double beta2, double eps)
    {
        double bc1 = 1.0 - Math.Pow(beta1, step);
        double bc2 = 1.0 - Math.Pow(beta2, step);
        var denom = v.sqrt().div_(Math.Sqrt(bc2)).add_(eps);
        p.addcdiv_(m, denom, value: -lr / bc1);
    }
}
