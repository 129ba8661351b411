using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>
/// Float conversions a loader does while reading (little-endian bytes in, little-endian bytes out), on the CPU's vector
/// units and on the calling thread, bit for bit as torch converts: fp16 → fp32 and bf16 → fp32 are exact; fp32 → fp16
/// rounds to nearest even (IEEE). Other pairs are left to torch.
/// </summary>
static class FloatConversion
{
    public static bool Supports(ScalarType from, ScalarType to) => (from, to) switch
    {
        (ScalarType.Float16, ScalarType.Float32) => true,
        (ScalarType.Float32, ScalarType.Float16) => true,
        (ScalarType.BFloat16, ScalarType.Float32) => true,
        _ => false,
    };

    public static void Convert(ScalarType from, ReadOnlySpan<byte> source, ScalarType to, Span<byte> destination)
    {
        switch (from, to)
        {
            case (ScalarType.Float16, ScalarType.Float32):
                TensorPrimitives.ConvertToSingle(MemoryMarshal.Cast<byte, Half>(source), MemoryMarshal.Cast<byte, float>(destination));
                break;
            case (ScalarType.Float32, ScalarType.Float16):
                TensorPrimitives.ConvertToHalf(MemoryMarshal.Cast<byte, float>(source), MemoryMarshal.Cast<byte, Half>(destination));
                break;
            case (ScalarType.BFloat16, ScalarType.Float32):
            {
                // bf16 is the high half of an fp32
                var src = MemoryMarshal.Cast<byte, ushort>(source);
                var dst = MemoryMarshal.Cast<byte, uint>(destination);
                if (dst.Length < src.Length) throw new ArgumentException("destination is shorter than the source");
                for (int i = 0; i < src.Length; i++) dst[i] = (uint)src[i] << 16;
                break;
            }
            default:
                throw new NotSupportedException($"{from} → {to} is converted by torch");
        }
    }
}
