using System.Globalization;
using System.Text;
using System.Text.RegularExpressions;
using DreamBooth.Schedulers;

namespace DreamBooth.Evaluation;

/// <summary>What an x/y plot axis varies (A1111 X/Y/Z plot: "Checkpoint name", "Prompt S/R", "CFG Scale", "Seed", "Steps", "Sampler").</summary>
public enum XYAxisKind { Checkpoint, Prompt, Cfg, Seed, Steps, Sampler }

/// <summary>One model to sample from: a single-file checkpoint (or any path <c>StableDiffusionModel.Load</c> accepts) and the epoch parsed from its name.</summary>
public sealed record XYCheckpoint(string Path, string Name, int? Epoch)
{
    /// <summary>The grid label: "epoch 20" for a training save, else the file name.</summary>
    public string Label => Epoch is int e ? $"epoch {e}" : Name;

    static readonly Regex EpochName = new(@"^(?<name>.+)_(?<epoch>\d+)$", RegexOptions.CultureInvariant);

    /// <summary>A checkpoint from a path; <c>{name}_{epoch:04d}.safetensors</c> gives its epoch.</summary>
    public static XYCheckpoint FromPath(string path)
    {
        string full = System.IO.Path.GetFullPath(path);
        string stem = System.IO.Path.GetFileNameWithoutExtension(full.TrimEnd(System.IO.Path.DirectorySeparatorChar));
        if (Directory.Exists(full)) stem = System.IO.Path.GetFileName(full.TrimEnd(System.IO.Path.DirectorySeparatorChar));
        var m = EpochName.Match(stem);
        return m.Success && int.TryParse(m.Groups["epoch"].Value, NumberStyles.None, CultureInfo.InvariantCulture, out int epoch)
            ? new XYCheckpoint(full, m.Groups["name"].Value, epoch)
            : new XYCheckpoint(full, stem, null);
    }

    /// <summary>
    /// Every saved epoch in a training output folder (<c>{name}_{epoch:04d}.safetensors</c>, also .ckpt),
    /// ordered by epoch. Files without an epoch at the end of their name (EMA copies `_ema`, mid-epoch saves `_s000123`,
    /// a base model) are left out; several run names in one folder are an error.
    /// </summary>
    public static IReadOnlyList<XYCheckpoint> FindEpochs(string directory)
    {
        if (!Directory.Exists(directory))
            throw new DreamBoothException($"checkpoint folder '{directory}' does not exist");
        var found = Directory.EnumerateFiles(directory)
            .Where(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase))
            .Where(f => !System.IO.Path.GetFileName(f).StartsWith('.'))
            .Select(FromPath)
            .Where(c => c.Epoch is not null)
            .OrderBy(c => c.Epoch)
            .ThenBy(c => c.Path, StringComparer.Ordinal)
            .ToList();
        if (found.Count == 0)
            throw new DreamBoothException($"no saved epochs in '{directory}': expected files named {{name}}_{{epoch:04d}}.safetensors");
        var names = found.Select(c => c.Name).Distinct(StringComparer.Ordinal).ToList();
        if (names.Count > 1)
            throw new DreamBoothException($"'{directory}' holds saves of {names.Count} runs ({string.Join(", ", names)}): pass the files of one run instead of the folder");
        var dup = found.GroupBy(c => c.Epoch).FirstOrDefault(g => g.Count() > 1);
        if (dup is not null)
            throw new DreamBoothException($"'{directory}' holds epoch {dup.Key} twice ({string.Join(", ", dup.Select(c => System.IO.Path.GetFileName(c.Path)))}): keep one format or pass files");
        return found;
    }

    /// <summary>Checkpoints from the CLI/notebook form: one folder (all its epochs) or a list of files/folders, kept in the given order.</summary>
    public static IReadOnlyList<XYCheckpoint> Resolve(IReadOnlyList<string> pathsOrFolder)
    {
        if (pathsOrFolder.Count == 0) throw new DreamBoothException("checkpoints: give a folder of saved epochs or one or more checkpoint files");
        if (pathsOrFolder.Count == 1 && Directory.Exists(pathsOrFolder[0]) && !IsDiffusersFolder(pathsOrFolder[0]))
            return FindEpochs(pathsOrFolder[0]);
        var list = new List<XYCheckpoint>();
        foreach (var p in pathsOrFolder)
        {
            if (!File.Exists(p) && !Directory.Exists(p))
                throw new DreamBoothException($"checkpoint '{p}' not found");
            list.Add(FromPath(p));
        }
        return list;
    }

    static bool IsDiffusersFolder(string dir) => File.Exists(System.IO.Path.Combine(dir, "model_index.json"));
}

/// <summary>
/// One axis of an x/y plot: its kind and values, parsed from A1111's value syntax (comma-separated, quotes
/// allowed; numeric ranges <c>1-5</c>, <c>1-10 (+2)</c>, <c>1-10 [4]</c> = 4 evenly spaced values).
/// </summary>
public sealed class XYAxis
{
    /// <summary>The most values one axis may have (a guard against a mistyped range).</summary>
    public const int MaxValues = 64;

    public XYAxisKind Kind { get; }
    /// <summary>Typed values: <see cref="XYCheckpoint"/>, string (prompt replacement, sampler), double (CFG), long (seed), int (steps).</summary>
    public IReadOnlyList<object> Values { get; }

    XYAxis(XYAxisKind kind, IReadOnlyList<object> values)
    {
        if (values.Count == 0) throw new DreamBoothException($"{Name(kind)} axis: no values");
        if (values.Count > MaxValues) throw new DreamBoothException($"{Name(kind)} axis: {values.Count} values, at most {MaxValues} allowed");
        Kind = kind;
        Values = values;
    }

    public int Count => Values.Count;

    /// <summary>The axis name used in labels and infotext.</summary>
    public string Name() => Name(Kind);

    public static string Name(XYAxisKind kind) => kind switch
    {
        XYAxisKind.Checkpoint => "Checkpoint",
        XYAxisKind.Prompt => "Prompt S/R",
        XYAxisKind.Cfg => "CFG scale",
        XYAxisKind.Seed => "Seed",
        XYAxisKind.Steps => "Steps",
        XYAxisKind.Sampler => "Sampler",
        _ => kind.ToString(),
    };

    /// <summary>The grid label of value <paramref name="index"/>: "axis name: value"; a checkpoint shows as its epoch ("epoch 20").</summary>
    public string Label(int index) => Values[index] switch
    {
        XYCheckpoint c => c.Label,
        string s when Kind == XYAxisKind.Prompt => $"prompt: {s}",
        string s => $"sampler: {s}",
        double d => $"CFG: {Format(d)}",
        long seed => $"seed: {seed}",
        int steps => $"steps: {steps}",
        var v => v.ToString() ?? "",
    };

    /// <summary>The value as A1111 writes it in "X Values" (checkpoint: file name).</summary>
    public string RawValue(int index) => Values[index] switch
    {
        XYCheckpoint c => System.IO.Path.GetFileName(c.Path),
        double d => Format(d),
        IFormattable f => f.ToString(null, CultureInfo.InvariantCulture),
        var v => v.ToString() ?? "",
    };

    /// <summary>All values as one A1111 CSV string (quoted where needed).</summary>
    public string RawValues() => string.Join(", ", Enumerable.Range(0, Count).Select(i => Quote(RawValue(i))));

    public static XYAxis Checkpoints(IReadOnlyList<XYCheckpoint> checkpoints) => new(XYAxisKind.Checkpoint, checkpoints.Cast<object>().ToList());

    /// <summary>Prompt S/R: the first value is the search string; every value (the first included) replaces it in the prompts.</summary>
    public static XYAxis PromptSR(IReadOnlyList<string> values)
    {
        var list = values.Select(v => v.Trim()).ToList();
        if (list.Count > 0 && list[0].Length == 0) throw new DreamBoothException("Prompt S/R axis: the first value (the search string) is empty");
        return new XYAxis(XYAxisKind.Prompt, list.Cast<object>().ToList());
    }

    public static XYAxis Cfg(IEnumerable<double> values) => new(XYAxisKind.Cfg, values.Select(CheckCfg).Cast<object>().ToList());
    public static XYAxis Seeds(IEnumerable<long> values) => new(XYAxisKind.Seed, values.Cast<object>().ToList());
    public static XYAxis Steps(IEnumerable<int> values) => new(XYAxisKind.Steps, values.Select(CheckSteps).Cast<object>().ToList());

    /// <summary>Samplers by A1111 name, checked and spelled as <see cref="SamplerFactory"/> knows them (or by <paramref name="canonical"/>).</summary>
    public static XYAxis Samplers(IEnumerable<string> names, Func<string, string>? canonical = null) =>
        new(XYAxisKind.Sampler, names.Select(canonical ?? SamplerFactory.Canonical).Cast<object>().ToList());

    /// <summary>An axis kind from its name: checkpoint, prompt (or "prompt s/r", "sr"), cfg, seed, steps, sampler.</summary>
    public static XYAxisKind ParseKind(string name) => name.Trim().ToLowerInvariant().Replace(" ", "").Replace("_", "") switch
    {
        "checkpoint" or "checkpoints" or "checkpointname" or "model" or "epoch" => XYAxisKind.Checkpoint,
        "prompt" or "prompts" or "prompts/r" or "sr" or "s/r" => XYAxisKind.Prompt,
        "cfg" or "cfgscale" or "guidance" => XYAxisKind.Cfg,
        "seed" or "seeds" => XYAxisKind.Seed,
        "steps" or "step" => XYAxisKind.Steps,
        "sampler" or "samplers" => XYAxisKind.Sampler,
        _ => throw new DreamBoothException($"unknown x/y axis '{name}': expected checkpoint, prompt, cfg, seed, steps or sampler"),
    };

    /// <summary>
    /// An axis from A1111's value text. Checkpoint values are paths (one folder = all its saved epochs);
    /// sampler names are checked against <see cref="SamplerFactory"/> unless <paramref name="canonicalSampler"/> is given.
    /// </summary>
    public static XYAxis Parse(XYAxisKind kind, string text, Func<string, string>? canonicalSampler = null)
    {
        var items = SplitCsv(text);
        if (items.Count == 0 || items.All(i => i.Length == 0)) throw new DreamBoothException($"{Name(kind)} axis: no values in '{text}'");
        return kind switch
        {
            XYAxisKind.Checkpoint => Checkpoints(XYCheckpoint.Resolve(NonEmpty(kind, items))),
            XYAxisKind.Prompt => PromptSR(items),
            XYAxisKind.Cfg => Cfg(NonEmpty(kind, items).SelectMany(i => ExpandDouble(kind, i))),
            XYAxisKind.Seed => Seeds(NonEmpty(kind, items).SelectMany(i => ExpandLong(kind, i))),
            XYAxisKind.Steps => Steps(NonEmpty(kind, items).SelectMany(i => ExpandLong(kind, i)).Select(v => v is < 1 or > 1000
                ? throw new DreamBoothException($"Steps axis: {v} is out of range (1..1000)") : (int)v)),
            XYAxisKind.Sampler => Samplers(NonEmpty(kind, items), canonicalSampler),
            _ => throw new ArgumentOutOfRangeException(nameof(kind)),
        };
    }

    static List<string> NonEmpty(XYAxisKind kind, List<string> items)
    {
        if (items.Any(i => i.Length == 0)) throw new DreamBoothException($"{Name(kind)} axis: an empty value (two commas in a row?)");
        return items;
    }

    static double CheckCfg(double v) => double.IsFinite(v) && v >= 0 && v <= 100
        ? v : throw new DreamBoothException($"CFG scale axis: {Format(v)} is out of range (0..100)");

    static int CheckSteps(int v) => v is >= 1 and <= 1000 ? v : throw new DreamBoothException($"Steps axis: {v} is out of range (1..1000)");

    // a-b, a-b (+s), a-b [n]; integers may be negative ("-1" alone is one value).
    static readonly Regex IntRange = new(@"^\s*([+-]?\d+)\s*-\s*([+-]?\d+)\s*(?:\(\s*([+-]?\d+)\s*\)|\[\s*(\d+)\s*\])?\s*$", RegexOptions.CultureInvariant);
    static readonly Regex FloatRange = new(@"^\s*([+-]?\d+(?:\.\d*)?)\s*-\s*([+-]?\d+(?:\.\d*)?)\s*(?:\(\s*([+-]?\d+(?:\.\d*)?)\s*\)|\[\s*(\d+)\s*\])?\s*$", RegexOptions.CultureInvariant);

    internal static IEnumerable<long> ExpandLong(XYAxisKind kind, string item)
    {
        if (long.TryParse(item, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long single)) return [single];
        var m = IntRange.Match(item);
        if (!m.Success) throw new DreamBoothException($"{Name(kind)} axis: '{item}' is not an integer or a range like 1-5, 1-10 (+2), 1-10 [4]");
        long a = long.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), b = long.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        if (m.Groups[4].Success)
        {
            int n = int.Parse(m.Groups[4].Value, CultureInfo.InvariantCulture);
            CheckCount(kind, item, n);
            return Enumerable.Range(0, n).Select(i => n == 1 ? a : a + (long)Math.Round((b - a) * (double)i / (n - 1))).Distinct().ToList();
        }
        long step = m.Groups[3].Success ? long.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture) : (b >= a ? 1 : -1);
        if (step == 0 || Math.Sign(step) != Math.Sign(b - a) && a != b)
            throw new DreamBoothException($"{Name(kind)} axis: range '{item}' never reaches {b} with step {step}");
        long count = (b - a) / step + 1;
        CheckCount(kind, item, count);
        return Enumerable.Range(0, (int)count).Select(i => a + i * step).ToList();
    }

    internal static IEnumerable<double> ExpandDouble(XYAxisKind kind, string item)
    {
        if (double.TryParse(item, NumberStyles.Float, CultureInfo.InvariantCulture, out double single)) return [single];
        var m = FloatRange.Match(item);
        if (!m.Success) throw new DreamBoothException($"{Name(kind)} axis: '{item}' is not a number or a range like 5-9 (+1.5), 3-12 [4]");
        double a = double.Parse(m.Groups[1].Value, CultureInfo.InvariantCulture), b = double.Parse(m.Groups[2].Value, CultureInfo.InvariantCulture);
        if (m.Groups[4].Success)
        {
            int n = int.Parse(m.Groups[4].Value, CultureInfo.InvariantCulture);
            CheckCount(kind, item, n);
            return Enumerable.Range(0, n).Select(i => n == 1 ? a : Math.Round(a + (b - a) * i / (n - 1), 6)).ToList();
        }
        double step = m.Groups[3].Success ? double.Parse(m.Groups[3].Value, CultureInfo.InvariantCulture) : (b >= a ? 1 : -1);
        if (step == 0 || Math.Sign(step) != Math.Sign(b - a) && a != b)
            throw new DreamBoothException($"{Name(kind)} axis: range '{item}' never reaches {Format(b)} with step {Format(step)}");
        long count = (long)Math.Floor((b - a) / step + 1e-9) + 1;
        CheckCount(kind, item, count);
        return Enumerable.Range(0, (int)count).Select(i => Math.Round(a + i * step, 6)).ToList();
    }

    static void CheckCount(XYAxisKind kind, string item, long n)
    {
        if (n < 1 || n > MaxValues) throw new DreamBoothException($"{Name(kind)} axis: range '{item}' gives {n} values (1..{MaxValues} allowed)");
    }

    /// <summary>Splits comma-separated values; double quotes protect commas (<c>"a, b"</c>) and <c>""</c> is a literal quote.</summary>
    public static List<string> SplitCsv(string text)
    {
        var result = new List<string>();
        var sb = new StringBuilder();
        bool quoted = false, wasQuoted = false;
        for (int i = 0; i < text.Length; i++)
        {
            char ch = text[i];
            if (quoted)
            {
                if (ch == '"' && i + 1 < text.Length && text[i + 1] == '"') { sb.Append('"'); i++; }
                else if (ch == '"') quoted = false;
                else sb.Append(ch);
            }
            else if (ch == '"' && sb.ToString().Trim().Length == 0) { sb.Clear(); quoted = true; wasQuoted = true; }
            else if (ch == ',') { result.Add(wasQuoted ? sb.ToString() : sb.ToString().Trim()); sb.Clear(); wasQuoted = false; }
            else if (!(wasQuoted && char.IsWhiteSpace(ch))) sb.Append(ch);
        }
        if (quoted) throw new DreamBoothException($"x/y values: unclosed quote in '{text}'");
        result.Add(wasQuoted ? sb.ToString() : sb.ToString().Trim());
        return result;
    }

    static string Quote(string v) => v.IndexOfAny([',', '"']) >= 0 || v != v.Trim() ? "\"" + v.Replace("\"", "\"\"") + "\"" : v;

    internal static string Format(double d) => d.ToString("0.###", CultureInfo.InvariantCulture);
}
