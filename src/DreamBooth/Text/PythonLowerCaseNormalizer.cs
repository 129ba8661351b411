using System.Globalization;
using System.Text;
using Microsoft.ML.Tokenizers;

namespace DreamBooth.Text;

/// <summary>
/// Lowercases as Python's <c>str.lower()</c> does (CLIP calls it): .NET's invariant simple mapping, plus the two
/// places where Python's full Unicode mapping differs — U+0130 (İ) becomes "i̇" (i + U+0307) and a capital sigma
/// at the end of a word becomes final sigma ς.
/// </summary>
public sealed class PythonLowerCaseNormalizer : Normalizer
{
    public static PythonLowerCaseNormalizer Instance { get; } = new();

    public override string Normalize(string original) => Lower(original);

    public override string Normalize(ReadOnlySpan<char> original) => Lower(original.ToString());

    public static string Lower(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sb = new StringBuilder(text.Length);
        for (int i = 0; i < text.Length;)
        {
            var rune = Rune.GetRuneAt(text, i);
            if (rune.Value == 0x0130) sb.Append("i\u0307");
            else if (rune.Value == 0x03A3) sb.Append(IsFinalSigma(text, i) ? '\u03C2' : '\u03C3');
            else sb.Append(Rune.ToLowerInvariant(rune).ToString());
            i += rune.Utf16SequenceLength;
        }
        return sb.ToString();
    }

    // Unicode's Final_Sigma condition: a cased letter before (skipping case-ignorables) and none after.
    static bool IsFinalSigma(string text, int index)
    {
        int j = index - 1;
        while (j >= 0 && IsCaseIgnorable(text[j])) j--;
        if (j < 0 || !IsCased(text[j])) return false;
        int k = index + 1;
        while (k < text.Length && IsCaseIgnorable(text[k])) k++;
        return k >= text.Length || !IsCased(text[k]);
    }

    static bool IsCased(char c) => char.GetUnicodeCategory(c) is UnicodeCategory.UppercaseLetter or UnicodeCategory.LowercaseLetter or UnicodeCategory.TitlecaseLetter;

    static bool IsCaseIgnorable(char c) =>
        c is '\'' or '.' or ':' or '\u00B7' or '\u2018' or '\u2019' or '\u2024' or '\uFE52' or '\uFF07' or '\uFF0E'
        || char.GetUnicodeCategory(c) is UnicodeCategory.NonSpacingMark or UnicodeCategory.EnclosingMark or UnicodeCategory.Format
            or UnicodeCategory.ModifierLetter or UnicodeCategory.ModifierSymbol;
}
