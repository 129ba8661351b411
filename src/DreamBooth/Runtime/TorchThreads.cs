namespace DreamBooth.Runtime;

/// <summary>
/// Sets torch's CPU thread count for a stretch of work and restores it on dispose. On tensors as small as the toy
/// model's, one thread is several times faster than two on a 2-core machine (OpenMP wake-ups dominate).
/// <para>
/// libtorch keeps the count per OS thread: <c>set_num_threads</c> applies to the calling thread and to threads that
/// run their first torch op afterwards, but a thread-pool thread that already ran one keeps its count (measured:
/// thread B at 2, thread A sets 1, B still reports 2). So call <see cref="Use"/> on the thread that does the work,
/// after the last <c>await</c> before it (inside <c>Task.Run</c>, not around it). The count also decides how CPU sums
/// are split, so results are bitwise reproducible only for the same count (docs/training.md).
/// </para>
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
