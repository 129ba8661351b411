using System.Text.RegularExpressions;

namespace DreamBooth.Text;

/// <summary>Caption text helpers: <c>[filewords]</c> substitution, tag shuffling, strict-token phrases.</summary>
public static partial class PromptTemplate
{
    public const string FileWords = "[filewords]";

    [GeneratedRegex(@"\[filewords\]", RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex FileWordsPattern();

    [GeneratedRegex(@"[,;.!?]\s")]
    private static partial Regex StrictSplit();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Spaces();

    [GeneratedRegex(@"\s*,(\s*,)+\s*")]
    private static partial Regex RepeatedCommas();

    /// <summary>
    /// Replaces every <c>[filewords]</c> in <paramref name="template"/> with the image's caption
    /// (<paramref name="filewords"/>, trimmed). With no caption the placeholder is removed and the
    /// commas and spaces it leaves behind are tidied. A template without the placeholder is returned as is.
    /// </summary>
    public static string Apply(string template, string? filewords)
    {
        ArgumentNullException.ThrowIfNull(template);
        if (!FileWordsPattern().IsMatch(template)) return template;
        var words = (filewords ?? "").Trim();
        var text = FileWordsPattern().Replace(template, _ => words);
        if (words.Length == 0)
        {
            text = RepeatedCommas().Replace(text, ", ");
            text = text.Trim().Trim(',').Trim();
        }
        return Spaces().Replace(text, " ").Trim();
    }

    /// <summary>
    /// Splits on commas, keeps the first tag in place, shuffles the rest with <paramref name="rng"/>
    /// (Fisher–Yates), and joins with ", ". Captions with fewer than three tags come back unchanged.
    /// </summary>
    public static string ShuffleTags(string caption, Random rng)
    {
        ArgumentNullException.ThrowIfNull(caption);
        ArgumentNullException.ThrowIfNull(rng);
        var tags = caption.Split(',').Select(t => t.Trim()).ToArray();
        if (tags.Length < 3) return caption;
        for (int i = tags.Length - 1; i > 1; i--)
        {
            int j = 1 + rng.Next(i);   // j in [1, i]
            (tags[i], tags[j]) = (tags[j], tags[i]);
        }
        return string.Join(", ", tags);
    }

    /// <summary>Strict-token phrases: the caption split at <c>[,;.!?]</c> followed by whitespace, empty phrases dropped.</summary>
    public static IReadOnlyList<string> StrictPhrases(string caption) =>
        StrictSplit().Split(caption).Select(p => p.Trim()).Where(p => p.Length > 0).ToList();
}
