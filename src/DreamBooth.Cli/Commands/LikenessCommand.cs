using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using DreamBooth.Data;
using DreamBooth.IO;
using DreamBooth.Likeness;

namespace DreamBooth.Cli.Commands;

/// <summary>
/// `dreambooth likeness --reference DIR [--images DIR]`: how much each image looks like the person in the reference
/// photos (face-api's descriptor, mean distance to the reference photos, &lt; 0.6 = same person), plus the identity check
/// of the reference photos themselves. JSON on stdout, or in --output.
/// </summary>
public sealed class LikenessCommand : ICliCommand
{
    public Command Build()
    {
        var reference = new Option<DirectoryInfo>("--reference") { Description = "Folder of photos of the person (e.g. the instance images); searched recursively", Required = true };
        var images = new Option<DirectoryInfo?>("--images") { Description = "Folder of images to score (e.g. samples of a checkpoint); without it only the reference is checked" };
        var output = new Option<FileInfo?>("--output") { Description = "Write the JSON here (.json) instead of stdout" };
        var cmd = new Command("likeness", "Score images by face likeness to a reference person (face-api descriptor distance, < 0.6 = same person) and check the reference photos; JSON output");
        foreach (var o in new Option[] { reference, images, output }) cmd.Options.Add(o);
        cmd.SetAction((parse, ct) =>
        {
            var refDir = parse.GetValue(reference)!.FullName;
            var imgDir = parse.GetValue(images)?.FullName;
            var outFile = parse.GetValue(output)?.FullName;
            if (!Directory.Exists(refDir)) throw new DreamBoothException($"--reference: folder not found: {refDir}");
            if (imgDir is not null && !Directory.Exists(imgDir)) throw new DreamBoothException($"--images: folder not found: {imgDir}");
            if (outFile is not null && !outFile.EndsWith(".json", StringComparison.OrdinalIgnoreCase))
                throw new DreamBoothException($"--output '{outFile}': the result is JSON, give a .json path");
            var imageFiles = imgDir is null ? [] : ImageIngest.ListFiles(imgDir);
            if (imgDir is not null && imageFiles.Count == 0) throw new DreamBoothException($"--images: {imgDir} holds no files");
            CliApp.Torch();
            using var describer = FaceDescriber.Create();
            var identity = IdentityReference.FromFolder(refDir, describer, ct: ct);
            var check = identity.Check();
            var json = new JsonObject
            {
                ["metric"] = LikenessJson.Metric,
                ["threshold"] = FaceDistance.Threshold,
                ["context_metric"] = LikenessJson.ContextMetric,
                ["reference"] = LikenessJson.Reference(identity, refDir),
                ["reference_check"] = LikenessJson.Check(check),
            };
            if (imgDir is not null)
            {
                var scorer = new LikenessScorer(describer, identity);
                var scored = new JsonArray();
                var skipped = new List<SkippedFile>();
                var distances = new List<double>();
                int faces = 0, same = 0;
                foreach (var file in imageFiles)
                {
                    ct.ThrowIfCancellationRequested();
                    var (loaded, skip) = ImageIngest.Load(file);
                    if (skip is not null) { skipped.Add(skip); continue; }
                    using (loaded)
                    {
                        var s = scorer.Score(loaded!.Image, ct);
                        scored.Add(LikenessJson.Score(Path.GetRelativePath(imgDir, file).Replace(Path.DirectorySeparatorChar, '/'), s));
                        if (s.Distance is double d) { faces++; distances.Add(d); if (s.SamePerson) same++; }
                    }
                }
                if (scored.Count == 0)
                    throw new DreamBoothException($"--images: none of the {imageFiles.Count} file(s) in {imgDir} is a readable image ({skipped[0].Code}: {Path.GetFileName(skipped[0].Source)})");
                json["images"] = scored;
                json["skipped"] = LikenessJson.Skipped(skipped);
                json["summary"] = new JsonObject
                {
                    ["images"] = scored.Count, ["with_face"] = faces, ["same_person"] = same,
                    ["mean_distance"] = LikenessJson.R(distances.Count == 0 ? null : distances.Average()),
                };
            }
            var text = json.ToJsonString(new JsonSerializerOptions { WriteIndented = true, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping });
            var w = parse.InvocationConfiguration.Output;
            if (outFile is null) w.WriteLine(text);
            else
            {
                AtomicFile.Write(outFile, s => s.Write(Encoding.UTF8.GetBytes(text + "\n")));
                var summary = json["summary"] is JsonObject sum
                    ? string.Create(CultureInfo.InvariantCulture, $"{sum["images"]} image(s), {sum["with_face"]} with a face, {sum["same_person"]} like the person (< {FaceDistance.Threshold})")
                    : "reference checked";
                w.WriteLine($"{summary}; {check.Summary}; wrote {outFile}");
            }
            return Task.FromResult(CliApp.Ok);
        });
        return cmd;
    }
}
