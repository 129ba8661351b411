using System.Runtime.InteropServices;

namespace DreamBooth.Training;

/// <summary>
/// fsync of a folder on Linux and macOS, so that renames into it (the new training state, the switched pointer) are on
/// disk before an older state is deleted. Files themselves are flushed by <see cref="DreamBooth.IO.AtomicFile"/>.
/// On Windows (NTFS journals renames) and where the call is refused, it does nothing.
/// </summary>
internal static partial class DirectorySync
{
    const int O_RDONLY = 0;

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags);

    [LibraryImport("libc", EntryPoint = "fsync", SetLastError = true)]
    private static partial int Fsync(int fd);

    [LibraryImport("libc", EntryPoint = "close", SetLastError = true)]
    private static partial int Close(int fd);

    public static void Flush(string folder)
    {
        if (!(OperatingSystem.IsLinux() || OperatingSystem.IsMacOS())) return;
        try
        {
            int fd = Open(Path.GetFullPath(folder), O_RDONLY);
            if (fd < 0) return;
            try { Fsync(fd); }
            finally { Close(fd); }
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // no libc under that name: the rename is still atomic, only its durability on power loss is the file system's
        }
    }
}
