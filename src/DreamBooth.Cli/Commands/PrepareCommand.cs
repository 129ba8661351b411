using System.CommandLine;
using System.Text;
using DreamBooth.Data;
using DreamBooth.IO;
using DreamBooth.Likeness;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth prepare`: raw photos → training images of the target size + manifest.json.</summary>
public sealed class PrepareCommand : ICliCommand
{
    public Command Build()
    {
        var input = new Option<DirectoryInfo>("--input") { Description = "Folder of raw photos (read only, searched recursively)", Required = true };
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder for the prepared images, manifest.json and debug/", Required = true };
        var size = new Option<string>("--size") { Description = "Target WIDTHxHEIGHT (focal mode) or maximum bucket area (subject mode)", DefaultValueFactory = _ => "768x1024" };
        var mode = new Option<PrepareMode>("--mode") { Description = "focal: focal-point crop to exactly --size; subject: crop the person to a preset ratio, then to the nearest bucket", DefaultValueFactory = _ => PrepareMode.Focal };
        var preset = new Option<string>("--weights") { Description = "Detector weight preset: recipe (face 1) or a1111 (face 0.9, edges 0.5, entropy 0.15, A1111 entropy score)", DefaultValueFactory = _ => "recipe" };
        var face = new Option<double?>("--face-weight") { Description = "Weight of the face point (overrides the preset)" };
        var edges = new Option<double?>("--edges-weight") { Description = "Weight of the edge/corner points (overrides the preset)" };
        var entropy = new Option<double?>("--entropy-weight") { Description = "Weight of the entropy window (overrides the preset)" };
        var entropyMode = new Option<EntropyMode?>("--entropy-mode") { Description = "shannon (true entropy of 8-bit grey) or a1111 (A1111's dithered score)" };
        var ratios = new Option<string>("--ratios") { Description = "Subject mode: comma-separated preset ratios", DefaultValueFactory = _ => "1:1,3:4,4:3,2:3,3:2,9:16,16:9" };
        var framing = new Option<SubjectFraming>("--framing") { Description = "Subject mode: how much of the person to keep around the face", DefaultValueFactory = _ => SubjectFraming.HeadAndShoulders };
        var allFaces = new Option<bool>("--all-faces") { Description = "Subject mode: frame all faces instead of the largest one" };
        var noUpscale = new Option<bool>("--no-upscale") { Description = "Skip images that would need upscaling (default: upscale with a warning)" };
        var debug = new Option<bool>("--debug") { Description = "Write an overlay per image into OUTPUT/debug/ (faces, points, weights, focal point, crop)" };
        var force = new Option<bool>("--force") { Description = "Redo every image even if the manifest says it is done" };
        var jobs = new Option<int>("--jobs") { Description = "Images processed in parallel", DefaultValueFactory = _ => Environment.ProcessorCount };
        var noIdentity = new Option<bool>("--no-identity-check") { Description = "Skip the identity check of the prepared images (face distances: someone else, near-duplicates, no/several faces → OUTPUT/identity-check.json)" };
        var cmd = new Command("prepare", "Prepare a DreamBooth training set: ingest photos, detect faces, subject/focal crop, resize, manifest");
        foreach (var o in new Option[] { input, output, size, mode, preset, face, edges, entropy, entropyMode, ratios, framing, allFaces, noUpscale, debug, force, jobs, noIdentity })
            cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            var focal = parse.GetValue(preset)!.ToLowerInvariant() switch
            {
                "recipe" => FocalCropOptions.Recipe,
                "a1111" => FocalCropOptions.A1111,
                var p => throw new DreamBoothException($"--weights: expected recipe or a1111, got '{p}'"),
            };
            focal = focal with
            {
                FaceWeight = Weight(parse.GetValue(face), focal.FaceWeight, "--face-weight"),
                EdgesWeight = Weight(parse.GetValue(edges), focal.EdgesWeight, "--edges-weight"),
                EntropyWeight = Weight(parse.GetValue(entropy), focal.EntropyWeight, "--entropy-weight"),
                EntropyMode = parse.GetValue(entropyMode) ?? focal.EntropyMode,
                AllowUpscale = !parse.GetValue(noUpscale),
            };
            int j = parse.GetValue(jobs);
            if (j <= 0) throw new DreamBoothException($"--jobs: expected a positive number, got {j}");
            var options = new PrepareOptions
            {
                Size = Bucket.Parse(parse.GetValue(size)!, "--size"),
                Mode = parse.GetValue(mode),
                Focal = focal,
                Subject = new SubjectCropOptions
                {
                    AspectRatios = parse.GetValue(ratios)!.Split(',', StringSplitOptions.RemoveEmptyEntries).Select(AspectRatio.Parse).ToList(),
                    Framing = parse.GetValue(framing),
                    AllFaces = parse.GetValue(allFaces),
                },
                Debug = parse.GetValue(debug),
                Force = parse.GetValue(force),
                MaxParallelism = j,
            };
            var err = parse.InvocationConfiguration.Error;
            var progress = new Progress<PrepareProgress>(p => { if (p.Status != "prepared" && p.Status != "unchanged") err.WriteLine($"[{p.Done}/{p.Total}] {p.Source}: {p.Status}"); });
            var report = await DatasetPreparer.RunAsync(parse.GetValue(input)!.FullName, parse.GetValue(output)!.FullName, options, progress, ct);
            w.WriteLine(report.Summary);
            foreach (var s in report.SkippedFiles) w.WriteLine($"  skipped {s.Source}: {s.Code}: {s.Reason}");
            foreach (var i in report.Manifest.Items.Where(i => i.Warnings.Count > 0))
                w.WriteLine($"  warning {i.Source}: {string.Join("; ", i.Warnings)}");
            w.WriteLine("buckets: " + string.Join(", ", report.BucketHistogram.Where(kv => kv.Value > 0).Select(kv => $"{kv.Key}={kv.Value}")));
            if (!parse.GetValue(noIdentity) && report.Prepared > 0) IdentityCheck(report, w, ct);
            return 0;
        });
        return cmd;
    }

    /// <summary>The identity check of the prepared images: printed, and written to OUTPUT/identity-check.json.</summary>
    static void IdentityCheck(DatasetReport report, TextWriter w, CancellationToken ct)
    {
        CliApp.Torch();
        using var describer = FaceDescriber.Create();
        var check = DatasetIdentityCheck.Run(report, describer, ct: ct);
        w.WriteLine(check.Summary);
        foreach (var i in check.Issues) w.WriteLine($"  {i.Kind}: {i.Detail}");
        // prepare's folder: the name is recorded as prepare's before the file is written (checked free before the first image)
        var folder = PreparedFolder.Claim(report.OutputFolder);
        folder.CheckCanWrite([DatasetIdentityCheck.FileName]);
        folder.Record(DatasetIdentityCheck.FileName);
        var path = Path.Combine(report.OutputFolder, DatasetIdentityCheck.FileName);
        var json = LikenessJson.Check(check).ToJsonString(new System.Text.Json.JsonSerializerOptions { WriteIndented = true });
        AtomicFile.Write(path, s => s.Write(Encoding.UTF8.GetBytes(json + "\n")));
    }

    static double Weight(double? value, double fallback, string name)
    {
        var v = value ?? fallback;
        if (v < 0 || double.IsNaN(v)) throw new DreamBoothException($"{name}: expected a weight >= 0, got {v}");
        return v;
    }
}
