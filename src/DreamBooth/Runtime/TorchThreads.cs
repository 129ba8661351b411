namespace DreamBooth.Runtime;

/// <summary>
/// Sets torch's CPU thread count for a stretch of work and restores it on dispose. On tensors as small as the toy
/// model's, one thread is several times faster than two on a 2-core machine (OpenMP wake-ups dominate).
/// </summary>
public sealed class TorchThreads : IDisposable
{
    readonly int? _before;

    TorchThreads(int? threads)
    {
        if (threads is < 1) throw new DreamBoothException($"torch threads {threads}: expected at least 1");
        if (threads is not { } n) return;
        _before = TorchSharp.torch.get_num_threads();
        TorchSharp.torch.set_num_threads(n);
    }

    /// <summary>Uses <paramref name="threads"/> threads until disposed; null leaves the setting alone.</summary>
    public static TorchThreads Use(int? threads) => new(threads);

    public void Dispose()
    {
        if (_before is { } n) TorchSharp.torch.set_num_threads(n);
    }
}
