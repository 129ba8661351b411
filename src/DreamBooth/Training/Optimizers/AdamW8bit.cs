using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// AdamW with 8-bit block-wise quantized moments (bitsandbytes' AdamW8bit recipe): for each parameter
/// with at least <see cref="MinQuantizedSize"/> elements, m is stored with the signed dynamic code book
/// and v with the unsigned one, one byte per value plus one float per 2048-value block. Each step
/// dequantizes, applies the AdamW update in fp32, and requantizes. Smaller tensors keep fp32 moments.
/// </summary>
public sealed class AdamW8bit : PerTensorOptimizer
{
    public const int MinQuantizedSize = 4096;
    readonly BlockwiseQuantizer _signed = new(signed: true);
    readonly BlockwiseQuantizer _unsigned = new(signed: false);

    public double Beta1 { get; }
    public double Beta2 { get; }
    public double Epsilon { get; }

    public AdamW8bit(IReadOnlyList<ParamGroup> groups, double beta1 = 0.9, double beta2 = 0.999, double epsilon = 1e-8) : base(groups)
    {
        Beta1 = beta1;
        Beta2 = beta2;
        Epsilon = epsilon;
    }

    static bool Quantized(Tensor p) => p.NumberOfElements >= MinQuantizedSize;

    protected override void InitState(Tensor p, Dictionary<string, Tensor> state)
    {
        if (!Quantized(p))
        {
            state["exp_avg"] = Persistent(torch.zeros_like(p));
            state["exp_avg_sq"] = Persistent(torch.zeros_like(p));
            return;
        }
        long blocks = (p.NumberOfElements + BlockwiseQuantizer.BlockSize - 1) / BlockwiseQuantizer.BlockSize;
        long padded = blocks * BlockwiseQuantizer.BlockSize;
        // index of code value 0 in each book: all-zero state
        byte zeroSigned = (byte)Array.IndexOf(BlockwiseQuantizer.DynamicMap(true), 0f);
        byte zeroUnsigned = (byte)Array.IndexOf(BlockwiseQuantizer.DynamicMap(false), 0f);
        state["exp_avg_q"] = Persistent(torch.full(padded, zeroSigned, ScalarType.Byte, p.device));
        state["exp_avg_absmax"] = Persistent(torch.zeros(blocks, ScalarType.Float32, p.device));
        state["exp_avg_sq_q"] = Persistent(torch.full(padded, zeroUnsigned, ScalarType.Byte, p.device));
        state["exp_avg_sq_absmax"] = Persistent(torch.zeros(blocks, ScalarType.Float32, p.device));
    }

    protected override void StepParameter(Tensor p, Tensor grad, Dictionary<string, Tensor> state, long step, double lr, double weightDecay)
    {
        if (weightDecay != 0) p.mul_(1.0 - lr * weightDecay);
        if (!Quantized(p))
        {
            var m32 = state["exp_avg"];
            var v32 = state["exp_avg_sq"];
            m32.mul_(Beta1).add_(grad, alpha: 1.0 - Beta1);
            v32.mul_(Beta2).addcmul_(grad, grad, value: 1.0 - Beta2);
            AdamW.Update(p, m32, v32, step, lr, Beta1, Beta2, Epsilon);
            return;
        }
        var g = grad.to(ScalarType.Float32);
        var m = _signed.Dequantize(state["exp_avg_q"], state["exp_avg_absmax"], p.shape);
        var v = _unsigned.Dequantize(state["exp_avg_sq_q"], state["exp_avg_sq_absmax"], p.shape);
        m.mul_(Beta1).add_(g, alpha: 1.0 - Beta1);
        v.mul_(Beta2).addcmul_(g, g, value: 1.0 - Beta2);
        AdamW.Update(p, m, v, step, lr, Beta1, Beta2, Epsilon);
        var (mq, ma) = _signed.Quantize(m);
        var (vq, va) = _unsigned.Quantize(v);
        state["exp_avg_q"].copy_(mq);
        state["exp_avg_absmax"].copy_(ma);
        state["exp_avg_sq_q"].copy_(vq);
        state["exp_avg_sq_absmax"].copy_(va);
    }

    protected override void Dispose(bool disposing)
    {
        _signed.Dispose();
        _unsigned.Dispose();
        base.Dispose(disposing);
    }
}
