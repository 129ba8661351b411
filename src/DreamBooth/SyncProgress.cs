namespace DreamBooth;

/// <summary>
/// An <see cref="IProgress{T}"/> that reports on the caller's thread, in order (unlike <see cref="Progress{T}"/>,
/// which posts to a synchronization context or the thread pool). Used wherever events must be seen in step order.
/// </summary>
public sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
