using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Models;

/// <summary>
/// Tests that read process-wide TorchSharp state (the live-tensor count, the default device) run alone, after the
/// parallel ones, so other tests' tensors do not disturb them.
/// </summary>
[CollectionDefinition(Name, DisableParallelization = true)]
public sealed class SerialModelTests
{
    public const string Name = "Models (serial: tensor counts, default device)";
}

static class ModelTestSupport
{
    /// <summary>Builds modules on the meta device: shapes only, no memory. Restores the CPU default afterwards.</summary>
    public static T OnMeta<T>(Func<T> build)
    {
        var previous = get_default_device();
        set_default_device(new Device(DeviceType.META));
        try { return build(); }
        finally { set_default_device(previous); }
    }

    /// <summary>Same shape and bit-identical values (torch.equal); the result is a bool tensor so call sites read <c>.item&lt;bool&gt;()</c>.</summary>
    public static Tensor Same(this Tensor a, Tensor b) =>
        tensor(a.shape.SequenceEqual(b.shape) && a.dtype == b.dtype && a.eq(b).all().item<bool>());

    /// <summary>The live-tensor count after finalising garbage left by earlier tests (finalizers lower the count at random times).</summary>
    public static long SettledTensorCount()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return Tensor.TotalCount;
    }

    public static double MaxAbsDiff(Tensor a, Tensor b)
    {
        using var scope = NewDisposeScope();
        return (a.to_type(ScalarType.Float32) - b.to_type(ScalarType.Float32)).abs().max().item<float>();
    }

    public static double MaxAbs(Tensor a)
    {
        using var scope = NewDisposeScope();
        return a.to_type(ScalarType.Float32).abs().max().item<float>();
    }
}
