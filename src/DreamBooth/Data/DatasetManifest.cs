using System.Text.Json;
using System.Text.Json.Serialization;
using DreamBooth.IO;

namespace DreamBooth.Data;

/// <summary>A rectangle in source-image pixels.</summary>
public sealed record ManifestRect(int X, int Y, int Width, int Height);

/// <summary>A detected face in source-image pixels.</summary>
public sealed record ManifestFace(float X, float Y, float Width, float Height, float Score, string Model);

/// <summary>One prepared image.</summary>
public sealed record ManifestItem
{
    /// <summary>Source path relative to the input folder ('/' separators).</summary>
    public required string Source { get; init; }
    public required string Sha256 { get; init; }
    public required int OriginalWidth { get; init; }
    public required int OriginalHeight { get; init; }
    /// <summary>1, or 1/2, 1/4, 1/8 when a large JPEG was decoded at reduced DCT scale (coordinates stay in source pixels).</summary>
    public double DecodeScale { get; init; } = 1.0;
    public IReadOnlyList<ManifestFace> Faces { get; init; } = [];
    public IReadOnlyList<ManifestFace> RejectedFaces { get; init; } = [];
    public required float FocalX { get; init; }
    public required float FocalY { get; init; }
    public bool FocalFallback { get; init; }
    /// <summary>The crop in source pixels (after EXIF orientation): x, y, width, height.</summary>
    public required ManifestRect Crop { get; init; }
    public ManifestRect? SubjectCrop { get; init; }
    public string? AspectRatio { get; init; }
    /// <summary>Output file name relative to the output folder.</summary>
    public required string Output { get; init; }
    public required int OutputWidth { get; init; }
    public required int OutputHeight { get; init; }
    public required string Bucket { get; init; }
    public IReadOnlyList<string> Warnings { get; init; } = [];
    public string? Debug { get; init; }
}

/// <summary>A file that was not used, with a stable code and a readable reason.</summary>
public sealed record ManifestSkip(string Source, string Code, string Reason);

/// <summary>The manifest.json written into every output folder: what was made from what, and what was skipped.</summary>
public sealed record DatasetManifest
{
    public const string FileName = "manifest.json";
    public int Version { get; init; } = 1;
    public required string Input { get; init; }
    /// <summary>SHA-256 of the settings that shape the outputs; a re-run with other settings redoes every image.</summary>
    public required string Fingerprint { get; init; }
    public required string Mode { get; init; }
    public required string Size { get; init; }
    public IReadOnlyList<ManifestItem> Items { get; init; } = [];
    public IReadOnlyList<ManifestSkip> Skipped { get; init; } = [];

    internal static readonly JsonSerializerOptions Json = new()
    {
        PropertyNamingPolicy = JsonNamingPolicy.SnakeCaseLower,
        WriteIndented = true,
        DefaultIgnoreCondition = JsonIgnoreCondition.WhenWritingNull,
    };

    public string ToJson() => JsonSerializer.Serialize(this, Json);

    public static DatasetManifest FromJson(string json, string what = "manifest")
    {
        try
        {
            return JsonSerializer.Deserialize<DatasetManifest>(json, Json) ?? throw new DreamBoothException($"{what}: empty JSON");
        }
        catch (JsonException e)
        {
            throw new DreamBoothException($"{what}: invalid manifest JSON ({e.Message})", e);
        }
    }

    public static DatasetManifest Load(string path) => FromJson(File.ReadAllText(path), path);

    public static DatasetManifest? TryLoad(string folder)
    {
        var path = Path.Combine(folder, FileName);
        return File.Exists(path) ? Load(path) : null;
    }

    public void Save(string folder) => AtomicFile.WriteAllText(Path.Combine(folder, FileName), ToJson());
}
