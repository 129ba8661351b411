namespace DreamBooth.IO;

/// <summary>
/// Checks a folder or file the user named for output before any work starts, so that a path that cannot be
/// written (a folder that is a file, a file that is a folder, a parent that is a file) is a one-line error naming
/// the setting, not an exception after minutes of computing.
/// </summary>
public static class OutputPath
{
    /// <summary>Why <paramref name="path"/> cannot be (or become) a folder, or null when it can.</summary>
    public static string? FolderProblem(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) return "is empty (expected a folder)";
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { return $"is not a valid path ({e.Message})"; }
        if (File.Exists(full)) return "is an existing file (expected a folder)";
        return AncestorProblem(full);
    }

    /// <summary>Why <paramref name="path"/> cannot be written as a file, or null when it can.</summary>
    public static string? FileProblem(string path)
    {
        if (string.IsNullOrWhiteSpace(path)) return "is empty (expected a file path)";
        string full;
        try { full = Path.GetFullPath(path); }
        catch (Exception e) when (e is ArgumentException or NotSupportedException or PathTooLongException) { return $"is not a valid path ({e.Message})"; }
        if (Directory.Exists(full)) return "is an existing folder (expected a file path)";
        return AncestorProblem(full);
    }

    /// <summary>Throws a <see cref="DreamBoothException"/> "<paramref name="setting"/> 'path': why" when the folder cannot be used.</summary>
    public static void CheckFolder(string path, string setting)
    {
        if (FolderProblem(path) is { } why) throw new DreamBoothException($"{setting} '{path}' {why}");
    }

    /// <summary>Throws a <see cref="DreamBoothException"/> "<paramref name="setting"/> 'path': why" when the file cannot be written.</summary>
    public static void CheckFile(string path, string setting)
    {
        if (FileProblem(path) is { } why) throw new DreamBoothException($"{setting} '{path}' {why}");
    }

    /// <summary>The nearest existing ancestor must be a folder (a file on the way makes every child path unwritable).</summary>
    static string? AncestorProblem(string full)
    {
        for (string? dir = Path.GetDirectoryName(full); !string.IsNullOrEmpty(dir); dir = Path.GetDirectoryName(dir))
        {
            if (Directory.Exists(dir)) return null;
            if (File.Exists(dir)) return $"cannot be created: '{dir}' is a file, not a folder";
        }
        return null;
    }
}
