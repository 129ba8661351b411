using System.Text.Json.Nodes;
using DreamBooth.Data;

namespace DreamBooth.Likeness;

/// <summary>The JSON form of likeness results (CLI output, x/y plot data): snake_case keys, distances rounded to 4 decimals, null where unknown.</summary>
public static class LikenessJson
{
    public const string Metric = "mean Euclidean distance between the main face's face-api descriptor (128-d) and the descriptors of the reference photos; lower = more alike";
    public const string ContextMetric = "mean CIELAB ΔE between face-masked 16x16 thumbnails, to the closest reference photo; lower = the reference photo's background/clothes/framing came back";

    public static JsonObject Score(string name, LikenessScore s) => new()
    {
        ["name"] = name,
        ["faces"] = s.Faces,
        ["small_faces"] = s.SmallFaces,
        ["distance"] = R(s.Distance),
        ["same_person"] = s.FaceFound ? s.SamePerson : null,
        ["min_distance"] = R(s.MinDistance),
        ["nearest_photo"] = s.NearestPhoto,
        ["context_distance"] = R(s.ContextDistance),
        ["nearest_context_photo"] = s.NearestContextPhoto,
    };

    public static JsonObject Reference(IdentityReference reference, string? folder = null) => new()
    {
        ["folder"] = folder,
        ["photos"] = new JsonArray(reference.Photos.Select(p => (JsonNode)new JsonObject
        {
            ["name"] = p.Name, ["faces"] = p.Faces, ["described"] = p.Descriptor is not null,
        }).ToArray()),
        ["skipped"] = Skipped(reference.Skipped),
    };

    public static JsonObject Check(IdentityCheckReport report) => new()
    {
        ["summary"] = report.Summary,
        ["median_pair_distance"] = R(report.MedianPairDistance),
        ["photos"] = new JsonArray(report.Photos.Select(p => (JsonNode)new JsonObject
        {
            ["name"] = p.Name, ["faces"] = p.Faces, ["median_distance"] = R(p.MedianDistance),
            ["nearest_photo"] = p.NearestPhoto, ["nearest_distance"] = R(p.NearestDistance),
        }).ToArray()),
        ["issues"] = new JsonArray(report.Issues.Select(i => (JsonNode)new JsonObject
        {
            ["kind"] = i.Kind, ["photos"] = new JsonArray(i.Photos.Select(p => (JsonNode?)JsonValue.Create(p)).ToArray()), ["detail"] = i.Detail,
        }).ToArray()),
        ["distances"] = new JsonArray(report.Distances.Select(row => (JsonNode)new JsonArray(row.Select(d => (JsonNode?)R(d)).ToArray())).ToArray()),
        ["skipped"] = Skipped(report.Skipped),
    };

    public static JsonArray Skipped(IEnumerable<SkippedFile> skipped) =>
        new(skipped.Select(s => (JsonNode)new JsonObject { ["file"] = s.Source, ["code"] = s.Code, ["reason"] = s.Detail }).ToArray());

    public static JsonValue? R(double? v) => v is double d && double.IsFinite(d) ? JsonValue.Create(Math.Round(d, 4)) : null;
}
