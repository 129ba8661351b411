using DreamBooth.IO;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Png;

namespace DreamBooth.Pipelines;

/// <summary>
/// Reads and writes the A1111 <c>parameters</c> text chunk of a PNG: tEXt when the text is Latin-1
/// (never compressed, as A1111 writes it), iTXt (UTF-8) otherwise.
/// </summary>
public static class PngInfotext
{
    /// <summary>The PNG text keyword A1111 uses.</summary>
    public const string Keyword = "parameters";

    /// <summary>Sets (replacing any earlier one) the <c>parameters</c> chunk on an image's PNG metadata.</summary>
    public static void Embed(Image image, string infotext)
    {
        var png = image.Metadata.GetPngMetadata();
        for (int i = png.TextData.Count - 1; i >= 0; i--)
            if (png.TextData[i].Keyword == Keyword) png.TextData.RemoveAt(i);
        png.TextData.Add(new PngTextData(Keyword, infotext, "", ""));
    }

    /// <summary>Saves <paramref name="image"/> as PNG with the infotext of <paramref name="info"/>, atomically.</summary>
    public static void Save(Image image, string path, GenerationInfo info) => Save(image, path, info.ToInfotext());

    /// <summary>Saves <paramref name="image"/> as PNG with <paramref name="infotext"/>, atomically (temp file + rename).</summary>
    public static void Save(Image image, string path, string infotext)
    {
        Embed(image, infotext);
        var encoder = new PngEncoder { TextCompressionThreshold = int.MaxValue, CompressionLevel = PngCompressionLevel.DefaultCompression };
        AtomicFile.Write(path, stream => image.SaveAsPng(stream, encoder));
    }

    /// <summary>The raw <c>parameters</c> text of a PNG, or null when the file has none.</summary>
    public static string? ReadText(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"image not found: {path}", path);
        IImageInfo? info;
        try { info = Image.Identify(path); }
        catch (Exception e) when (e is UnknownImageFormatException or InvalidImageContentException or NotSupportedException)
        {
            throw new DreamBoothException($"{path}: not a readable image ({e.Message})", e);
        }
        if (info is null) throw new DreamBoothException($"{path}: not a readable image");
        return info.Metadata.GetPngMetadata().TextData.FirstOrDefault(t => t.Keyword == Keyword).Value;
    }

    /// <summary>The parsed parameters of a PNG, or null when it has no (parsable) <c>parameters</c> chunk.</summary>
    public static GenerationInfo? Read(string path) => GenerationInfo.TryParse(ReadText(path));
}
