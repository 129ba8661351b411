using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;

namespace DreamBooth.Pipelines;

/// <summary>
/// The parameters of one generated image, in AUTOMATIC1111's "infotext" form (what its PNG Info tab and
/// civitai read from the PNG <c>parameters</c> chunk):
/// <code>
/// a photo of sks man
/// Negative prompt: blurry
/// Steps: 40, Sampler: DPM++ 2M Karras, CFG scale: 7.5, Seed: 1, Size: 768x1024, Model hash: abcdef1234, Model: name, Clip skip: 1
/// </code>
/// Parameters this record does not model are kept in <see cref="Extra"/> (in order) and written back.
/// </summary>
public sealed record GenerationInfo
{
    public string Prompt { get; init; } = "";
    public string NegativePrompt { get; init; } = "";
    public int Steps { get; init; } = 40;
    public string Sampler { get; init; } = "DPM++ 2M Karras";
    public double CfgScale { get; init; } = 7.5;
    public long Seed { get; init; }
    public int Width { get; init; } = 512;
    public int Height { get; init; } = 512;
    public string? ModelHash { get; init; }
    public string? ModelName { get; init; }
    public int ClipSkip { get; init; } = 1;
    /// <summary>Other "Key: value" parameters (e.g. "Batch size", "Version"), in the order they appear.</summary>
    public IReadOnlyList<KeyValuePair<string, string>> Extra { get; init; } = [];

    /// <summary>The value of an extra parameter, or null.</summary>
    public string? this[string key] => Extra.FirstOrDefault(kv => string.Equals(kv.Key, key, StringComparison.Ordinal)).Value;

    /// <summary>The infotext: prompt, "Negative prompt: …" when there is one, then the parameter line.</summary>
    public string ToInfotext()
    {
        var sb = new StringBuilder();
        sb.Append(Prompt);
        if (!string.IsNullOrEmpty(NegativePrompt)) sb.Append("\nNegative prompt: ").Append(NegativePrompt);
        var pairs = new List<(string, string)>
        {
            ("Steps", Steps.ToString(CultureInfo.InvariantCulture)),
            ("Sampler", Sampler),
            ("CFG scale", FormatNumber(CfgScale)),
            ("Seed", Seed.ToString(CultureInfo.InvariantCulture)),
            ("Size", $"{Width}x{Height}"),
        };
        if (!string.IsNullOrEmpty(ModelHash)) pairs.Add(("Model hash", ModelHash));
        if (!string.IsNullOrEmpty(ModelName)) pairs.Add(("Model", ModelName));
        pairs.Add(("Clip skip", ClipSkip.ToString(CultureInfo.InvariantCulture)));
        foreach (var kv in Extra) pairs.Add((kv.Key, kv.Value));
        sb.Append('\n').Append(string.Join(", ", pairs.Select(p => $"{p.Item1}: {Quote(p.Item2)}")));
        return sb.ToString();
    }

    public override string ToString() => ToInfotext();

    /// <summary>A1111's number format: 7.5, 7 (no trailing ".0").</summary>
    static string FormatNumber(double v) => v.ToString("0.###############", CultureInfo.InvariantCulture);

    /// <summary>A1111 quotes a value that holds ',', ':' or a newline as a JSON string.</summary>
    static string Quote(string value) =>
        value.IndexOfAny([',', ':', '\n']) < 0 ? value : JsonSerializer.Serialize(value, QuoteOptions);

    static readonly JsonSerializerOptions QuoteOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    // A1111 infotext_utils.re_param_code: key, then a quoted JSON string or anything up to the next comma
    static readonly Regex ParamRegex = new(@"\s*(\w[\w \-/]+):\s*(""(?:\\.|[^\\""])+""|[^,]*)(?:,|$)", RegexOptions.Compiled);

    /// <summary>
    /// Parses an infotext as A1111 does: the last line is the parameter line when it holds at least three
    /// "Key: value" pairs; lines from one starting "Negative prompt:" on are the negative prompt.
    /// Throws <see cref="DreamBoothException"/> when there is no parameter line or a known value is malformed.
    /// </summary>
    public static GenerationInfo Parse(string infotext)
    {
        ArgumentNullException.ThrowIfNull(infotext);
        var lines = infotext.Replace("\r\n", "\n").Split('\n').ToList();
        string last = lines[^1].Trim();
        var matches = ParamRegex.Matches(last);
        if (matches.Count < 3) throw new DreamBoothException("infotext: no parameter line (\"Steps: …, Sampler: …\") at the end");
        lines.RemoveAt(lines.Count - 1);

        var prompt = new StringBuilder();
        var negative = new StringBuilder();
        bool inNegative = false;
        foreach (var raw in lines)
        {
            var line = raw.Trim();
            if (line.StartsWith("Negative prompt:", StringComparison.Ordinal))
            {
                inNegative = true;
                line = line["Negative prompt:".Length..].TrimStart();
            }
            var target = inNegative ? negative : prompt;
            if (target.Length > 0) target.Append('\n');
            target.Append(line);
        }

        var info = new GenerationInfo { Prompt = prompt.ToString(), NegativePrompt = negative.ToString() };
        var extra = new List<KeyValuePair<string, string>>();
        foreach (Match m in matches)
        {
            string key = m.Groups[1].Value.Trim();
            string value = m.Groups[2].Value.Trim();
            if (value.Length >= 2 && value[0] == '"' && value[^1] == '"')
            {
                try { value = JsonSerializer.Deserialize<string>(value) ?? value; } catch (JsonException) { }
            }
            switch (key)
            {
                case "Steps": info = info with { Steps = ParseInt(key, value) }; break;
                case "Sampler": info = info with { Sampler = value }; break;
                case "CFG scale": info = info with { CfgScale = ParseDouble(key, value) }; break;
                case "Seed": info = info with { Seed = ParseLong(key, value) }; break;
                case "Size":
                {
                    var parts = value.Split('x');
                    if (parts.Length != 2) throw new DreamBoothException($"infotext: Size '{value}' is not WxH");
                    info = info with { Width = ParseInt(key, parts[0]), Height = ParseInt(key, parts[1]) };
                    break;
                }
                case "Model hash": info = info with { ModelHash = value }; break;
                case "Model": info = info with { ModelName = value }; break;
                case "Clip skip": info = info with { ClipSkip = ParseInt(key, value) }; break;
                default: extra.Add(new(key, value)); break;
            }
        }
        return info with { Extra = extra };
    }

    /// <summary>Parses, or returns null when the text is not an infotext.</summary>
    public static GenerationInfo? TryParse(string? infotext)
    {
        if (string.IsNullOrWhiteSpace(infotext)) return null;
        try { return Parse(infotext); } catch (DreamBoothException) { return null; }
    }

    static int ParseInt(string key, string v) =>
        int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) ? r : throw new DreamBoothException($"infotext: {key} '{v}' is not an integer");

    static long ParseLong(string key, string v) =>
        long.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out var r) ? r : throw new DreamBoothException($"infotext: {key} '{v}' is not an integer");

    static double ParseDouble(string key, string v) =>
        double.TryParse(v, NumberStyles.Float, CultureInfo.InvariantCulture, out var r) ? r : throw new DreamBoothException($"infotext: {key} '{v}' is not a number");

    public bool Equals(GenerationInfo? other) =>
        other is not null && Prompt == other.Prompt && NegativePrompt == other.NegativePrompt && Steps == other.Steps &&
        Sampler == other.Sampler && CfgScale.Equals(other.CfgScale) && Seed == other.Seed && Width == other.Width &&
        Height == other.Height && ModelHash == other.ModelHash && ModelName == other.ModelName && ClipSkip == other.ClipSkip &&
        Extra.SequenceEqual(other.Extra);

    public override int GetHashCode() => HashCode.Combine(Prompt, NegativePrompt, Steps, Sampler, CfgScale, Seed, Width, Height);
}
