using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training.Optimizers;

/// <summary>
/// Block-wise 8-bit quantization of optimizer state (Dettmers et al. 2022, "8-bit Optimizers via
/// Block-wise Quantization"): the tensor is cut into blocks of <see cref="BlockSize"/> values, each block
/// is divided by its absolute maximum and every value is stored as the index (one byte) of the nearest
/// entry of a 256-entry code book. The code book is the "dynamic" (tree) map: a decimal exponent of
/// 7 levels with linearly spaced fractions, so small magnitudes keep relative precision.
/// </summary>
public sealed class BlockwiseQuantizer : IDisposable
{
    public const int BlockSize = 2048;

    /// <summary>Sorted 256 code values: in [−1, 1] when signed, in [0, 1] when not.</summary>
    public Tensor Code { get; }
    public bool Signed { get; }

    public BlockwiseQuantizer(bool signed)
    {
        Signed = signed;
        Code = torch.tensor(DynamicMap(signed), ScalarType.Float32).DetachFromDisposeScope();
    }

    /// <summary>
    /// The dynamic code book: for exponent level i = 0..6 the fractions are the midpoints of
    /// 2^i (signed) or 2^(i+1) (unsigned) equal steps of [0.1, 1], scaled by 10^(i−6); signed maps
    /// mirror them; 0 and 1 complete the 256 entries.
    /// </summary>
    public static float[] DynamicMap(bool signed)
    {
        const int exponentBits = 7;
        var values = new List<double>();
        for (int i = 0; i < exponentBits; i++)
        {
            int steps = signed ? 1 << i : 1 << (i + 1);
            double scale = Math.Pow(10, -(exponentBits - 1) + i);
            for (int k = 0; k < steps; k++)
            {
                double lo = 0.1 + 0.9 * k / steps, hi = 0.1 + 0.9 * (k + 1) / steps;
                double mid = (lo + hi) / 2.0;
                values.Add(scale * mid);
                if (signed) values.Add(-scale * mid);
            }
        }
        values.Add(0.0);
        values.Add(1.0);
        if (values.Count != 256) throw new InvalidOperationException($"dynamic map has {values.Count} entries");
        values.Sort();
        return values.Select(v => (float)v).ToArray();
    }

    /// <summary>Quantizes a float tensor: (codes uint8 [padded n], absmax float32 [blocks]). The caller owns both.</summary>
    public (Tensor Codes, Tensor AbsMax) Quantize(Tensor x)
    {
        using var scope = torch.NewDisposeScope();
        long n = x.NumberOfElements;
        long blocks = (n + BlockSize - 1) / BlockSize;
        var flat = x.detach().reshape(-1).to(ScalarType.Float32);
        long pad = blocks * BlockSize - n;
        if (pad > 0) flat = torch.cat([flat, torch.zeros(pad, dtype: ScalarType.Float32, device: x.device)]);
        var b = flat.view(blocks, BlockSize);
        var absmax = b.abs().amax([1L]);
        var normalized = b / absmax.clamp_min(1e-30f).unsqueeze(1);
        var code = Code.to(x.device);
        // nearest code: the insertion point and its left neighbour, whichever is closer
        var hi = torch.searchsorted(code, normalized.contiguous()).clamp_(0, 255);
        var lo = (hi - 1).clamp_(0, 255);
        var dHi = (code[hi] - normalized).abs_();
        var dLo = (code[lo] - normalized).abs_();
        var idx = torch.where(dLo <= dHi, lo, hi);
        var codes = idx.to(ScalarType.Byte).reshape(-1);
        return (codes.MoveToOuterDisposeScope(), absmax.MoveToOuterDisposeScope());
    }

    /// <summary>Inverse of <see cref="Quantize"/>: float32 tensor of <paramref name="shape"/>.</summary>
    public Tensor Dequantize(Tensor codes, Tensor absMax, long[] shape)
    {
        using var scope = torch.NewDisposeScope();
        long n = shape.Aggregate(1L, (a, b) => a * b);
        var code = Code.to(codes.device);
        var values = code[codes.to(ScalarType.Int64)].view(absMax.shape[0], BlockSize) * absMax.unsqueeze(1);
        return values.reshape(-1).narrow(0, 0, n).reshape(shape).MoveToOuterDisposeScope();
    }

    public void Dispose() => Code.Dispose();
}
