using System.Security.Cryptography;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.Metadata.Profiles.Exif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using SkiaSharp;

namespace DreamBooth.Data;

/// <summary>Limits and conversions applied when reading raw photos.</summary>
public sealed record IngestOptions
{
    /// <summary>Images with more pixels than this (from the header) are skipped as decompression bombs.</summary>
    public double MaxMegapixels { get; init; } = 120;
    /// <summary>Images with a side longer than this are skipped.</summary>
    public int MaxSide { get; init; } = 30000;
    /// <summary>Files larger than this are skipped without being read.</summary>
    public long MaxFileBytes { get; init; } = 512L << 20;
    /// <summary>Neutral background that transparent pixels are composited onto (mid grey).</summary>
    public Rgb24 Background { get; init; } = new(127, 127, 127);
    public static IngestOptions Default { get; } = new();
}

/// <summary>Why a file was not used. <see cref="Code"/> is stable (for tests and tools), <see cref="Detail"/> is for people.</summary>
public sealed record SkippedFile(string Source, string Code, string Detail);

/// <summary>A decoded photo: upright (EXIF applied), RGB 8-bit, alpha composited, plus what the header said.</summary>
public sealed class LoadedImage : IDisposable
{
    public required Image<Rgb24> Image { get; init; }
    public required string Source { get; init; }
    public required string Sha256 { get; init; }
    public required string Format { get; init; }
    /// <summary>Size after EXIF orientation, in source pixels (what the manifest's crop rectangle refers to).</summary>
    public required int Width { get; init; }
    public required int Height { get; init; }
    /// <summary>Decoded pixels per source pixel: 1, or 1/2, 1/4, 1/8 when a large JPEG was decoded at reduced DCT scale.</summary>
    public double Scale { get; init; } = 1.0;
    public List<string> Warnings { get; } = [];
    public void Dispose() => Image.Dispose();
}

/// <summary>Reading raw photos safely: header checks before decoding, conversion to RGB 8-bit, reasons for every skip.</summary>
public static class ImageIngest
{
    public const string CodeEmpty = "empty";
    public const string CodeUnreadable = "unreadable";
    public const string CodeNotImage = "not-an-image";
    public const string CodeCorrupt = "corrupt";
    public const string CodeTooLarge = "too-large";
    public const string CodeDuplicate = "duplicate";
    public const string CodeTooSmall = "too-small";
    /// <summary>A symbolic link to a folder that was already read (a loop, or a second path to the same photos).</summary>
    public const string CodeRepeatedFolder = "repeated-folder";
    /// <summary>The file ends before the image data does (an interrupted copy or download).</summary>
    public const string CodeTruncated = "truncated";

    /// <summary>Side-car files that live beside photos in datasets (captions, notes, metadata): not reported as skipped.</summary>
    static readonly HashSet<string> s_sidecarExtensions = new(StringComparer.OrdinalIgnoreCase) { ".txt", ".caption", ".md", ".json", ".xmp", ".yaml", ".yml", ".toml" };

    static readonly HashSet<string> s_ignoredNames = new(StringComparer.OrdinalIgnoreCase) { "manifest.json", "Thumbs.db", ".DS_Store", "desktop.ini" };

    /// <summary>Every regular file (side-car captions/notes excluded) under <paramref name="dir"/> (recursively, hidden files and folders excluded), sorted ordinally.</summary>
    public static IReadOnlyList<string> ListFiles(string dir, string? exclude = null) => ListFiles(dir, exclude, out _);

    /// <summary>
    /// As <see cref="ListFiles(string, string?)"/>; each real folder is read once: a symbolic link to a folder already
    /// read (its parent, a loop, a second path to the same photos) is not followed and comes back in
    /// <paramref name="notFollowed"/> with the reason. Folders reached without a link are read before linked ones, so a
    /// photo keeps its plain path when it has one.
    /// </summary>
    public static IReadOnlyList<string> ListFiles(string dir, string? exclude, out IReadOnlyList<SkippedFile> notFollowed)
    {
        if (!Directory.Exists(dir)) throw new DreamBoothException($"input folder not found: {dir}");
        var excludeFull = exclude is null ? null : Path.TrimEndingDirectorySeparator(Path.GetFullPath(exclude)) + Path.DirectorySeparatorChar;
        string? excludeReal = exclude is null || !Directory.Exists(exclude) ? null : RealPath(exclude) + Path.DirectorySeparatorChar;
        var opts = new EnumerationOptions { RecurseSubdirectories = false, AttributesToSkip = FileAttributes.Hidden | FileAttributes.System, IgnoreInaccessible = true };
        var visited = new Dictionary<string, string>(StringComparer.Ordinal) { [RealPath(dir)] = dir };
        var skipped = new List<SkippedFile>();
        var files = new List<string>();
        var plain = new Queue<string>([dir]);
        var linked = new Queue<string>();
        bool Excluded(string path, string real) =>
            (excludeFull is not null && (Path.GetFullPath(path) + Path.DirectorySeparatorChar).StartsWith(excludeFull, StringComparison.Ordinal))
            || (excludeReal is not null && (real + Path.DirectorySeparatorChar).StartsWith(excludeReal, StringComparison.Ordinal));
        while (plain.Count > 0 || linked.Count > 0)
        {
            string current = plain.Count > 0 ? plain.Dequeue() : linked.Dequeue();
            if (current != dir)
            {
                string real;
                try { real = RealPath(current); }
                catch (IOException e) { skipped.Add(new SkippedFile(current, CodeUnreadable, Flatten(e.Message))); continue; }
                if (Excluded(current, real)) continue;
                if (!visited.TryAdd(real, current))
                {
                    string first = visited[real] == dir ? "the input folder itself" : Path.GetRelativePath(dir, visited[real]).Replace(Path.DirectorySeparatorChar, '/');
                    skipped.Add(new SkippedFile(current, CodeRepeatedFolder, $"symbolic link to a folder already read ({first}): not followed again"));
                    continue;
                }
            }
            foreach (var f in Directory.EnumerateFiles(current, "*", opts))
                if (!Path.GetFileName(f).StartsWith('.') && !s_ignoredNames.Contains(Path.GetFileName(f)) && !s_sidecarExtensions.Contains(Path.GetExtension(f))
                    && (excludeFull is null || !Path.GetFullPath(f).StartsWith(excludeFull, StringComparison.Ordinal)))
                    files.Add(f);
            foreach (var sub in Directory.EnumerateDirectories(current, "*", opts).Order(StringComparer.Ordinal))
                (new DirectoryInfo(sub).LinkTarget is null ? plain : linked).Enqueue(sub);
        }
        notFollowed = skipped;
        return files.Order(StringComparer.Ordinal).ToList();
    }

    /// <summary>
    /// The path with every symbolic link resolved (each component, as realpath(3)): two paths to one folder give the
    /// same string. More than 40 links in a chain is an <see cref="IOException"/>.
    /// </summary>
    internal static string RealPath(string path, int depth = 0)
    {
        if (depth > 40) throw new IOException($"{path}: too many levels of symbolic links");
        string full = Path.GetFullPath(path);
        string root = Path.GetPathRoot(full)!;
        string current = root;
        foreach (var part in full[root.Length..].Split(Path.DirectorySeparatorChar, StringSplitOptions.RemoveEmptyEntries))
        {
            string next = Path.Combine(current, part);
            if (new FileInfo(next).LinkTarget is { } target)
                next = RealPath(Path.IsPathRooted(target) ? target : Path.Combine(current, target), depth + 1);
            current = next;
        }
        return Path.TrimEndingDirectorySeparator(current);
    }

    /// <summary>SHA-256 of zero bytes: what <see cref="Sha256"/> returns, without opening, for a path with no content.</summary>
    public static readonly string EmptySha256 = Convert.ToHexStringLower(SHA256.HashData(ReadOnlySpan<byte>.Empty));

    /// <summary>
    /// Bytes behind a path, following symbolic links (a dangling link is an <see cref="IOException"/>). A FIFO, device
    /// or socket reports 0 like an empty file, and callers never open a path with no content: opening a FIFO blocks
    /// until a writer appears, and a link to /dev/zero never ends.
    /// </summary>
    public static long ContentLength(string path)
    {
        var fi = new FileInfo(path);
        if (fi.LinkTarget is null) return fi.Length;
        var target = fi.ResolveLinkTarget(returnFinalTarget: true);
        if (target is null || !target.Exists) throw new IOException($"broken symbolic link to {fi.LinkTarget}");
        if (target is not FileInfo file) throw new IOException($"symbolic link to a folder ({fi.LinkTarget})");
        return file.Length;
    }

    public static string Sha256(string path)
    {
        if (ContentLength(path) == 0) return EmptySha256;
        using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, 1 << 16);
        return Convert.ToHexStringLower(SHA256.HashData(fs));
    }

    /// <summary>Header-only check: size and format without decoding pixels; a skip when the file cannot be used.</summary>
    public static (IImageInfo? Info, IImageFormat? Format, SkippedFile? Skip) Probe(string path, IngestOptions options)
    {
        long length;
        try { length = ContentLength(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return (null, null, new SkippedFile(path, CodeUnreadable, e.Message)); }
        if (length == 0) return (null, null, new SkippedFile(path, CodeEmpty, "zero bytes (an empty file, or a FIFO/device/socket, which is never opened)"));
        if (length > options.MaxFileBytes)
            return (null, null, new SkippedFile(path, CodeTooLarge, $"file is {length >> 20} MiB (limit {options.MaxFileBytes >> 20} MiB)"));
        try
        {
            using var fs = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
            var info = Image.Identify(fs, out var format);
            if (info is null || format is null) return (null, null, new SkippedFile(path, CodeNotImage, "not a recognised image format (JPEG, PNG, WebP, BMP, TIFF, GIF)"));
            if (info.Width <= 0 || info.Height <= 0) return (null, null, new SkippedFile(path, CodeCorrupt, $"header says {info.Width}x{info.Height}"));
            double mp = (double)info.Width * info.Height / 1e6;
            if (info.Width > options.MaxSide || info.Height > options.MaxSide || mp > options.MaxMegapixels)
                return (null, null, new SkippedFile(path, CodeTooLarge, $"{info.Width}x{info.Height} ({mp:F0} MP) exceeds the limit of {options.MaxMegapixels} MP / {options.MaxSide} px per side (decompression bomb guard)"));
            return (info, format, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (null, null, new SkippedFile(path, CodeUnreadable, e.Message));
        }
        catch (UnknownImageFormatException)
        {
            return (null, null, new SkippedFile(path, CodeNotImage, "not a recognised image format (JPEG, PNG, WebP, BMP, TIFF, GIF)"));
        }
        catch (Exception e) when (e is ImageFormatException or InvalidDataException or NotSupportedException or ArgumentException or InvalidOperationException or IndexOutOfRangeException)
        {
            return (null, null, new SkippedFile(path, CodeCorrupt, Flatten(e.Message)));
        }
    }

    /// <summary>
    /// Decodes a photo to upright RGB 8-bit (the first frame of an animation; transparency composited on
    /// <see cref="IngestOptions.Background"/>), or says why not. Never writes to the source.
    /// </summary>
    /// <param name="minScale">
    /// Optional: given the upright source size, the smallest decoded/source scale the caller can use. A JPEG is then
    /// decoded by libjpeg-turbo (SkiaSharp) at the smallest DCT scale 1/8, 1/4 or 1/2 that is still at least that
    /// (a 12-MP photo for a 768×1024 target decodes at 1/2: a quarter of the pixels, memory and time).
    /// </param>
    public static (LoadedImage? Image, SkippedFile? Skip) Load(string path, IngestOptions? options = null, string? sha256 = null,
        Func<int, int, double>? minScale = null)
    {
        options ??= IngestOptions.Default;
        var (info, format, skip) = Probe(path, options);
        if (skip is not null) return (null, skip);
        try
        {
            byte[] bytes = File.ReadAllBytes(path);
            // decoders fill a cut-off image with black (JPEG) or transparency (PNG) without a word: find the end first
            if (Truncation(bytes, format!) is { } cut) return (null, new SkippedFile(path, CodeTruncated, cut));
            sha256 ??= Convert.ToHexStringLower(SHA256.HashData(bytes));
            var warnings = new List<string>();
            var ext = Path.GetExtension(path).TrimStart('.').ToLowerInvariant();
            if (ext.Length > 0 && !format!.FileExtensions.Contains(ext, StringComparer.OrdinalIgnoreCase))
                warnings.Add($"extension .{ext} but the content is {format.Name}");
            int bpp = info!.PixelType?.BitsPerPixel ?? 0;
            if (bpp > 32) warnings.Add($"{bpp}-bit source converted to 8 bits per channel");
            Image<Rgb24>? rgb = null;
            double scale = 1.0;
            if (format is JpegFormat && minScale is not null)
                (rgb, scale) = TryScaledJpeg(bytes, info, minScale);
            if (rgb is null && format is JpegFormat)
            {
                // no alpha in JPEG: decode straight to RGB (CMYK/YCCK/grey are converted by the decoder), 3 bytes per pixel
                rgb = Image.Load<Rgb24>(Configuration.Default, bytes);
            }
            else if (rgb is null)
            {
                Image<Rgba32> rgba;
                if (format is GifFormat)
                {
                    rgba = Image.Load<Rgba32>(Configuration.Default, bytes, new GifDecoder { DecodingMode = SixLabors.ImageSharp.Metadata.FrameDecodingMode.First });
                    if (IsAnimatedGif(bytes)) warnings.Add("animated GIF: only the first frame is used");
                }
                else
                {
                    rgba = Image.Load<Rgba32>(Configuration.Default, bytes);
                }
                using (rgba)
                {
                    rgb = ToRgb(rgba, options.Background, out bool hadAlpha);
                    rgb.Metadata.ExifProfile = rgba.Metadata.ExifProfile?.DeepClone();
                    if (hadAlpha) warnings.Add("transparency composited on a neutral background");
                }
            }
            var orientation = rgb.Metadata.ExifProfile?.GetValue(ExifTag.Orientation)?.Value ?? 1;
            if (orientation is > 1 and <= 8)
            {
                rgb.Mutate(c => c.AutoOrient());
                warnings.Add($"EXIF orientation {orientation} applied");
            }
            var loaded = new LoadedImage
            {
                Image = rgb, Source = path, Sha256 = sha256, Format = format!.Name, Scale = scale,
                Width = scale == 1.0 ? rgb.Width : orientation is >= 5 and <= 8 ? info.Height : info.Width,
                Height = scale == 1.0 ? rgb.Height : orientation is >= 5 and <= 8 ? info.Width : info.Height,
            };
            loaded.Warnings.AddRange(warnings);
            return (loaded, null);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return (null, new SkippedFile(path, CodeUnreadable, Flatten(e.Message)));
        }
        catch (UnknownImageFormatException e)
        {
            return (null, new SkippedFile(path, CodeNotImage, Flatten(e.Message)));
        }
        catch (Exception e) when (e is ImageFormatException or InvalidDataException or NotSupportedException or ArgumentException or InvalidOperationException or IndexOutOfRangeException or InvalidImageContentException)
        {
            return (null, new SkippedFile(path, CodeCorrupt, Flatten(e.Message)));
        }
    }

    /// <summary>
    /// Why the encoded image stops before its data does, or null when its container is complete: a JPEG must reach its
    /// end-of-image marker (segments are walked by their lengths, entropy-coded data up to the next marker), a PNG its
    /// IEND chunk, a WebP the length its RIFF header gives. Other formats are left to their decoders.
    /// </summary>
    internal static string? Truncation(ReadOnlySpan<byte> b, IImageFormat format) => format switch
    {
        JpegFormat => JpegTruncation(b),
        SixLabors.ImageSharp.Formats.Png.PngFormat => PngTruncation(b),
        SixLabors.ImageSharp.Formats.Webp.WebpFormat => WebpTruncation(b),
        _ => null,
    };

    static string Cut(int length, string where) =>
        $"cut short: the file ends after {length} bytes, {where} (an interrupted copy or download?); a decoder would fill the rest black";

    static string? JpegTruncation(ReadOnlySpan<byte> b)
    {
        if (b.Length < 4 || b[0] != 0xFF || b[1] != 0xD8) return null; // not a JPEG stream the walker knows: the decoder decides
        int i = 2;
        bool inScan = false;
        while (true)
        {
            if (inScan)
            {
                // entropy-coded data: 0xFF 0x00 is a stuffed byte, 0xFF 0xD0..D7 a restart marker; any other marker ends the scan
                while (true)
                {
                    int ff = b[i..].IndexOf((byte)0xFF);
                    if (ff < 0 || i + ff + 1 >= b.Length) return Cut(b.Length, "inside the compressed image data, before the end-of-image marker");
                    i += ff;
                    byte n = b[i + 1];
                    if (n == 0x00 || n is >= 0xD0 and <= 0xD7) { i += 2; continue; }
                    if (n == 0xFF) { i++; continue; }
                    break;
                }
                inScan = false;
            }
            while (i < b.Length && b[i] != 0xFF) i++;   // tolerate stray bytes between segments, as decoders do
            while (i < b.Length && b[i] == 0xFF) i++;   // fill bytes
            if (i >= b.Length) return Cut(b.Length, "before the end-of-image marker");
            byte marker = b[i++];
            if (marker == 0xD9) return null;             // EOI: complete
            if (marker == 0x01 || marker is >= 0xD0 and <= 0xD7) continue;
            if (i + 2 > b.Length) return Cut(b.Length, $"inside the header of segment 0xFF{marker:X2}");
            int length = (b[i] << 8) | b[i + 1];
            if (length < 2) return null;                 // malformed: the decoder reports it
            if ((long)i + length > b.Length) return Cut(b.Length, $"inside segment 0xFF{marker:X2}, which needs {i + length} bytes");
            i += length;
            if (marker == 0xDA) inScan = true;           // SOS: compressed data follows
        }
    }

    static string? WebpTruncation(ReadOnlySpan<byte> b)
    {
        if (b.Length < 12) return null;
        long needed = 8L + System.Buffers.Binary.BinaryPrimitives.ReadUInt32LittleEndian(b[4..8]);
        return needed > b.Length ? Cut(b.Length, $"its RIFF header says {needed}") : null;
    }

    static string? PngTruncation(ReadOnlySpan<byte> b)
    {
        if (b.Length < 8) return null;
        long i = 8;
        while (true)
        {
            if (i + 8 > b.Length) return Cut(b.Length, "before the IEND chunk that ends every PNG");
            uint length = System.Buffers.Binary.BinaryPrimitives.ReadUInt32BigEndian(b[(int)i..]);
            string type = System.Text.Encoding.ASCII.GetString(b.Slice((int)i + 4, 4));
            if (i + 12 + length > b.Length) return Cut(b.Length, $"inside its '{type}' chunk, which needs {i + 12 + length} bytes");
            if (type == "IEND") return null;
            i += 12 + length;
        }
    }

    /// <summary>DCT-scaled JPEG decode through SkiaSharp; null (use ImageSharp) when not worth it or anything goes wrong.</summary>
    static (Image<Rgb24>? Image, double Scale) TryScaledJpeg(byte[] bytes, IImageInfo info, Func<int, int, double> minScale)
    {
        // both orientations: the EXIF value is only known for sure after decoding
        double need = Math.Clamp(Math.Max(minScale(info.Width, info.Height), minScale(info.Height, info.Width)), 0, 1);
        double d = 1.0;
        foreach (var candidate in new[] { 0.125, 0.25, 0.5 })
            if (candidate >= need) { d = candidate; break; }
        if (d >= 1.0) return (null, 1.0);
        using var data = SKData.CreateCopy(bytes);
        using var codec = SKCodec.Create(data);
        if (codec is null) return (null, 1.0);
        var dims = codec.GetScaledDimensions((float)d);
        // libjpeg-turbo scales by M/8; only use exact power-of-two results
        if (Math.Abs(dims.Width - Math.Ceiling(codec.Info.Width * d)) > 1 || Math.Abs(dims.Height - Math.Ceiling(codec.Info.Height * d)) > 1) return (null, 1.0);
        var skInfo = new SKImageInfo(dims.Width, dims.Height, SKColorType.Rgba8888, SKAlphaType.Unpremul);
        var pixels = new byte[skInfo.BytesSize];
        var result = codec.GetPixels(skInfo, pixels);
        if (result != SKCodecResult.Success) return (null, 1.0);
        var img = new Image<Rgb24>(dims.Width, dims.Height);
        img.ProcessPixelRows(acc =>
        {
            for (int y = 0; y < acc.Height; y++)
            {
                var row = acc.GetRowSpan(y);
                int o = y * skInfo.RowBytes;
                for (int x = 0; x < row.Length; x++, o += 4) row[x] = new Rgb24(pixels[o], pixels[o + 1], pixels[o + 2]);
            }
        });
        if ((int)codec.EncodedOrigin is > 1 and <= 8)
        {
            img.Metadata.ExifProfile = new ExifProfile();
            img.Metadata.ExifProfile.SetValue(ExifTag.Orientation, (ushort)codec.EncodedOrigin);
        }
        return (img, d);
    }

    /// <summary>RGB 8-bit copy; pixels with alpha are blended over <paramref name="background"/>.</summary>
    static Image<Rgb24> ToRgb(Image<Rgba32> src, Rgb24 background, out bool hadAlpha)
    {
        var dst = new Image<Rgb24>(src.Width, src.Height);
        bool alpha = false;
        src.ProcessPixelRows(dst, (a, b) =>
        {
            for (int y = 0; y < a.Height; y++)
            {
                var ra = a.GetRowSpan(y);
                var rb = b.GetRowSpan(y);
                for (int x = 0; x < ra.Length; x++)
                {
                    var p = ra[x];
                    if (p.A == 255) { rb[x] = new Rgb24(p.R, p.G, p.B); continue; }
                    alpha = true;
                    int t = p.A, u = 255 - t;
                    rb[x] = new Rgb24((byte)((p.R * t + background.R * u + 127) / 255), (byte)((p.G * t + background.G * u + 127) / 255), (byte)((p.B * t + background.B * u + 127) / 255));
                }
            }
        });
        hadAlpha = alpha;
        return dst;
    }

    /// <summary>A GIF with the NETSCAPE2.0 looping extension or more than one image descriptor block.</summary>
    internal static bool IsAnimatedGif(byte[] bytes) =>
        bytes.AsSpan().IndexOf("NETSCAPE2.0"u8) >= 0 || bytes.AsSpan().IndexOf("ANIMEXTS1.0"u8) >= 0;

    static string Flatten(string s) => s.ReplaceLineEndings(" ").Trim();
}
