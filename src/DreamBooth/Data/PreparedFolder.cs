using DreamBooth.IO;

namespace DreamBooth.Data;

/// <summary>
/// The output folder of <see cref="DatasetPreparer"/>, and proof of what in it prepare wrote: a marker file
/// (<see cref="MarkerFileName"/>) created before the first image, listing every file name prepare has written there,
/// each appended before the file itself is written. Prepare writes only into an empty or new folder, or one with
/// this marker (or, from before the marker existed, a valid manifest.json), and never replaces a file it did not write.
/// </summary>
public sealed class PreparedFolder
{
    public const string MarkerFileName = ".dreambooth-prepare";
    const string Header = "# written by `dreambooth prepare`: this folder holds prepared images; the files below are the ones prepare wrote here";

    /// <summary>Files the OS or file managers drop into any folder: they do not make a folder someone else's.</summary>
    static readonly HashSet<string> s_cruft = new(StringComparer.OrdinalIgnoreCase) { ".DS_Store", "Thumbs.db", "desktop.ini" };

    /// <summary>The name <see cref="AtomicFile"/> gives the marker while writing it.</summary>
    static readonly System.Text.RegularExpressions.Regex s_markerTemp =
        new(@"^\." + System.Text.RegularExpressions.Regex.Escape(MarkerFileName) + @"\.[0-9]+\.[0-9a-f]{32}\.tmp$");

    readonly HashSet<string> _written = new(StringComparer.Ordinal);
    readonly object _lock = new();

    public string Path { get; }

    PreparedFolder(string path) => Path = path;

    /// <summary>
    /// Checks that prepare may write into <paramref name="dir"/> and creates it (and the marker) if so. Throws a
    /// <see cref="DreamBoothException"/> naming <paramref name="setting"/> for a file, or a non-empty folder that
    /// prepare did not write. Nothing is written before the checks pass.
    /// </summary>
    public static PreparedFolder Claim(string dir, string setting = "--output")
    {
        OutputPath.CheckFolder(dir, setting);
        var folder = new PreparedFolder(System.IO.Path.TrimEndingDirectorySeparator(System.IO.Path.GetFullPath(dir)));
        string marker = System.IO.Path.Combine(folder.Path, MarkerFileName);
        if (File.Exists(marker))
        {
            foreach (var line in File.ReadLines(marker))
                if (line.Length > 0 && line[0] != '#') folder._written.Add(line);
            return folder;
        }
        if (Directory.Exists(folder.Path))
        {
            // a prepare killed while writing the first marker leaves only the marker's temporary file (AtomicFile's
            // ".<name>.<pid>.<guid>.tmp"): prepare's own, so it neither makes the folder someone else's nor stays
            foreach (var e in Directory.EnumerateFiles(folder.Path, "." + MarkerFileName + ".*.tmp"))
                if (s_markerTemp.IsMatch(System.IO.Path.GetFileName(e))) File.Delete(e);
            var entries = Directory.EnumerateFileSystemEntries(folder.Path).Where(e => !s_cruft.Contains(System.IO.Path.GetFileName(e))).ToList();
            if (entries.Count > 0)
            {
                // a folder prepared before the marker existed: its manifest lists what prepare wrote
                var manifest = TryLoadManifest(folder.Path);
                if (manifest is null)
                {
                    var example = entries.Select(e => System.IO.Path.GetFileName(e)).Order(StringComparer.Ordinal).First();
                    throw new DreamBoothException($"{setting} '{dir}' is a folder prepare did not write ({entries.Count} {(entries.Count == 1 ? "entry" : "entries")}, e.g. '{example}'): " +
                        "expected a new or empty folder, or one an earlier prepare wrote (it has " + MarkerFileName + "); nothing was written");
                }
                folder._written.Add(DatasetManifest.FileName);
                foreach (var item in manifest.Items)
                {
                    folder._written.Add(item.Output);
                    if (item.Debug is not null) folder._written.Add(item.Debug);
                }
            }
        }
        Directory.CreateDirectory(folder.Path);
        var lines = new List<string> { Header };
        lines.AddRange(folder._written.Order(StringComparer.Ordinal));
        AtomicFile.WriteAllText(marker, string.Join('\n', lines) + "\n");
        return folder;
    }

    static DatasetManifest? TryLoadManifest(string dir)
    {
        try { return DatasetManifest.TryLoad(dir); }
        catch (Exception e) when (e is DreamBoothException or IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>True when prepare wrote <paramref name="name"/> (relative, '/' separators) here, in this run or an earlier one.</summary>
    public bool Wrote(string name)
    {
        lock (_lock) return _written.Contains(name);
    }

    /// <summary>
    /// Throws, before any image is processed, when one of <paramref name="names"/> exists in the folder but prepare did not
    /// write it (a file of the same name that is someone else's).
    /// </summary>
    public void CheckCanWrite(IEnumerable<string> names, string setting = "--output")
    {
        foreach (var name in names)
        {
            string full = System.IO.Path.Combine(Path, name);
            if ((File.Exists(full) || Directory.Exists(full)) && !Wrote(name))
                throw new DreamBoothException($"{setting} '{Path}': '{name}' is already there and prepare did not write it; move it away or choose another folder (no image was written)");
        }
    }

    /// <summary>Records <paramref name="name"/> as prepare's before it is written (a kill in between leaves a name without a file: harmless).</summary>
    public void Record(string name)
    {
        if (name.Contains('\n') || name.Contains('\r')) throw new ArgumentException($"file name with a line break: {name}", nameof(name));
        lock (_lock)
        {
            if (!_written.Add(name)) return;
            File.AppendAllText(System.IO.Path.Combine(Path, MarkerFileName), name + "\n");
        }
    }
}
