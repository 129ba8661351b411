using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

static class TensorAssert
{
    /// <summary>Same dtype, shape and bytes.</summary>
    public static bool BitEqual(this Tensor a, Tensor b)
    {
        if (a.dtype != b.dtype || !a.shape.SequenceEqual(b.shape)) return false;
        using var ca = a.detach().cpu().contiguous();
        using var cb = b.detach().cpu().contiguous();
        return ca.bytes.SequenceEqual(cb.bytes);
    }
}
