namespace DreamBooth.Training;

/// <summary>What a <see cref="IPreviewScorer"/> measured on one epoch's previews.</summary>
/// <param name="Values">One value per preview file (null: not measurable, e.g. no face).</param>
/// <param name="Mean">Mean of the measurable values, or null.</param>
/// <param name="Summary">One line for the log and the monitor.</param>
public sealed record PreviewScores(IReadOnlyList<double?> Values, double? Mean, string Summary);

/// <summary>
/// Measures the preview images the trainer just rendered (e.g. the face likeness to the instance photos:
/// <see cref="LikenessPreviewScorer"/>, switched on by <c>preview_likeness</c>). The trainer puts the mean
/// into the Preview event (<see cref="TrainingEvent.Likeness"/>); the scorer keeps its own log beside the loss log.
/// </summary>
public interface IPreviewScorer
{
    PreviewScores Score(IReadOnlyList<string> files, IReadOnlyList<string> prompts, int epoch, int step);
}
