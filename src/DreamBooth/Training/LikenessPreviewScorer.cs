using System.Globalization;
using DreamBooth.Data;
using DreamBooth.Likeness;

namespace DreamBooth.Training;

/// <summary>
/// The face likeness of training previews (config <c>preview_likeness</c>): each preview is scored against the
/// instance photos (<see cref="LikenessScorer"/>); previews whose prompt holds the instance token make the mean that
/// the trainer reports with its Preview event (the monitor shows it), every preview is a row of
/// <c>{output}/likeness.csv</c>, and the means are TensorBoard scalars in <c>{output}/tensorboard/likeness/</c>
/// (<c>likeness/distance</c>, <c>likeness/same_person_fraction</c>). The instance photos are described once, up front:
/// a set without a face is an error before training starts. The nets are loaded for each scoring and released after,
/// so nothing stays in memory between previews.
/// </summary>
public sealed class LikenessPreviewScorer : IPreviewScorer
{
    public const string CsvName = "likeness.csv";
    public const string CsvHeader = "epoch,step,preview,subject,faces,distance,min_distance,same_person,context_distance,prompt";

    readonly IdentityReference _reference;
    readonly string _outputDir;
    readonly string? _instanceToken;
    TorchSharp.Modules.SummaryWriter? _tensorboard;

    public LikenessPreviewScorer(IdentityReference reference, string outputDir, string? instanceToken)
    {
        _reference = reference;
        _outputDir = outputDir;
        _instanceToken = instanceToken;
    }

    /// <summary>The scorer of a run: its concepts' instance photos are the reference; the first concept's prompts give the instance token.</summary>
    public static LikenessPreviewScorer For(TrainingConfig config)
    {
        var files = config.Concepts.SelectMany(c => TrainingConfig.ImageFiles(c.InstanceDir).Select(f => (Path.GetFileName(f), f))).ToList();
        if (files.Count == 0) throw new DreamBoothException("preview_likeness: the concepts' instance folders hold no images to compare the previews with");
        IdentityReference reference;
        using (var describer = FaceDescriber.Create())
        {
            try { reference = IdentityReference.FromFiles(files, describer); }
            catch (DreamBoothException e) { throw new DreamBoothException($"preview_likeness: {e.Message}"); }
        }
        var concept = config.Concepts[0];
        return new LikenessPreviewScorer(reference, config.OutputDir, FaceDistance.InstanceToken(concept.InstancePrompt, concept.ClassPrompt));
    }

    public PreviewScores Score(IReadOnlyList<string> files, IReadOnlyList<string> prompts, int epoch, int step)
    {
        var values = new List<double?>();
        var rows = new List<string>();
        using (var describer = FaceDescriber.Create())
        {
            var scorer = new LikenessScorer(describer, _reference);
            for (int k = 0; k < files.Count; k++)
            {
                string prompt = k < prompts.Count ? prompts[k] : "";
                bool subject = _instanceToken is null || prompt.Contains(_instanceToken, StringComparison.OrdinalIgnoreCase);
                var (loaded, skip) = ImageIngest.Load(files[k]);
                if (skip is not null) throw new DreamBoothException($"preview {files[k]}: {skip.Code}: {skip.Detail}");
                LikenessScore s;
                using (loaded) s = scorer.Score(loaded!.Image);
                values.Add(subject ? s.Distance : null);
                rows.Add(string.Join(",", I(epoch), I(step), I(k), subject ? "1" : "0", I(s.Faces), D(s.Distance), D(s.MinDistance),
                    s.FaceFound ? (s.SamePerson ? "1" : "0") : "", D(s.ContextDistance), Csv(prompt)));
            }
        }
        var csv = Path.Combine(_outputDir, CsvName);
        if (!File.Exists(csv)) File.WriteAllText(csv, CsvHeader + "\n");
        File.AppendAllLines(csv, rows);

        var measured = values.Where(v => v is not null).Select(v => v!.Value).ToList();
        int subjects = files.Select((_, k) => k < prompts.Count ? prompts[k] : "").Count(p => _instanceToken is null || p.Contains(_instanceToken, StringComparison.OrdinalIgnoreCase));
        double? mean = measured.Count == 0 ? null : measured.Average();
        int same = measured.Count(d => d < FaceDistance.Threshold);
        if (mean is double m)
        {
            _tensorboard ??= TorchSharp.torch.utils.tensorboard.SummaryWriter(Directory.CreateDirectory(Path.Combine(_outputDir, "tensorboard", "likeness")).FullName);
            _tensorboard.add_scalar("likeness/distance", (float)m, step);
            _tensorboard.add_scalar("likeness/same_person_fraction", (float)same / measured.Count, step);
        }
        string summary = mean is double mm
            ? string.Create(CultureInfo.InvariantCulture, $"preview likeness after epoch {epoch}: {mm:0.00} mean face distance over {measured.Count}/{subjects} subject preview(s) with a face ({same} under {FaceDistance.Threshold})")
            : $"preview likeness after epoch {epoch}: no face in the {subjects} subject preview(s)";
        return new PreviewScores(values, mean, summary);
    }

    static string I(int v) => v.ToString(CultureInfo.InvariantCulture);
    static string D(double? v) => v is double d ? d.ToString("0.####", CultureInfo.InvariantCulture) : "";
    static string Csv(string s) => "\"" + s.Replace("\"", "\"\"") + "\"";
}
