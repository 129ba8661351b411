using System.Runtime.CompilerServices;
using DreamBooth.Pipelines;
using DreamBooth.Training;

namespace DreamBooth.Interactive;

/// <summary>
/// Class (prior-preservation) images of one concept before training: how many the recipe needs
/// (class images per instance image × instance images), how many usable images the class folder already
/// holds, and what would be generated for the shortfall (prompt, CFG, steps) and at which size: the size of the
/// instance images' buckets (768x1024 for the recipe's photos), as the trainer generates them
/// (<see cref="ClassImagePreparation"/>), not max_resolution square.
/// </summary>
public sealed record ClassImagePlan(string ClassDirectory, int InstanceImages, int PerInstance, int Found, int Unreadable,
    string ClassPrompt, string NegativePrompt, double GuidanceScale, int Steps, bool GenerateMissing)
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<ClassImagePlan>(p => p.ToHtml()));

    /// <summary>The instance buckets and each one's share of the shortfall (empty when the instance folder holds no readable image).</summary>
    public IReadOnlyList<ClassImageBucket> Buckets { get; init; } = [];

    public int Needed => ClassImageRequest.NeededFor(InstanceImages, PerInstance);
    public int ToGenerate => Math.Max(0, Needed - Found);

    /// <summary>"1500 at 768x1024" (or several sizes).</summary>
    public string Sizes => Buckets.Any(b => b.ToGenerate > 0)
        ? string.Join(", ", Buckets.Where(b => b.ToGenerate > 0).Select(b => $"{b.ToGenerate} at {b.Size}"))
        : "at the instance images' bucket size";

    /// <summary>
    /// Counts the class folder (readable images, as <see cref="ClassImageGenerator"/> counts them) of <paramref name="concept"/>
    /// (a missing folder holds 0) for <paramref name="instanceImages"/> instance images, and reads the instance folder's
    /// buckets with <paramref name="config"/>'s max_resolution and resolution_step (default: the recipe's 1024 and 64).
    /// </summary>
    public static ClassImagePlan For(ConceptConfig concept, int instanceImages, TrainingConfig? config = null)
    {
        _ = ClassImageRequest.NeededFor(instanceImages, concept.ClassImagesPerInstance); // validates the counts
        config ??= new TrainingConfig();
        var (readable, unreadable) = ClassImageGenerator.Scan(concept.ClassDir);
        int found = readable.Count;
        var buckets = string.IsNullOrWhiteSpace(concept.InstanceDir) ? []
            : ClassImagePreparation.InstanceBuckets(concept.InstanceDir, config.MaxResolution, config.ResolutionStep);
        int shortfall = Math.Max(0, ClassImageRequest.NeededFor(instanceImages, concept.ClassImagesPerInstance) - found);
        var shares = ClassImagePreparation.Split(shortfall, buckets.Select(b => b.Count).ToList());
        return new ClassImagePlan(concept.ClassDir, instanceImages, concept.ClassImagesPerInstance, found, unreadable.Count,
            concept.ClassPrompt, concept.ClassNegativePrompt, concept.ClassGuidanceScale, concept.ClassSteps, concept.GenerateClassImages)
        {
            Buckets = buckets.Select((b, i) => new ClassImageBucket(b.Width, b.Height, b.Count, shares[i])).ToList(),
        };
    }

    public string Summary => ToGenerate == 0
        ? $"class images: {Found} found, {Needed} needed ({PerInstance} × {InstanceImages} instance images): nothing to generate"
        : GenerateMissing
            ? $"class images: {Found} found, {Needed} needed ({PerInstance} × {InstanceImages} instance images): {ToGenerate} would be generated ({Sizes}) with \"{ClassPrompt}\" (CFG {GuidanceScale}, {Steps} steps)"
            : $"class images: {Found} found, {Needed} needed ({PerInstance} × {InstanceImages} instance images): {ToGenerate} missing and generation is off";

    public override string ToString() => Summary;

    public string ToHtml() => Html.KeyValueTable(
    [
        ("class folder", string.IsNullOrWhiteSpace(ClassDirectory) ? "(none: no prior preservation)" : ClassDirectory),
        ("instance images", InstanceImages),
        ("instance buckets", Buckets.Count == 0 ? "—" : string.Join(", ", Buckets.Select(b => $"{b.Size} ({b.InstanceImages})"))),
        ("class images per instance image", PerInstance),
        ("needed", Needed),
        ("found (readable)", Found),
        ("unreadable (not counted)", Unreadable),
        ("to generate", ToGenerate),
        ("would be generated with", ToGenerate == 0 ? "—" : GenerateMissing
            ? $"prompt \"{ClassPrompt}\"" + (string.IsNullOrEmpty(NegativePrompt) ? "" : $", negative \"{NegativePrompt}\"") + $", CFG {GuidanceScale}, {Steps} steps, one seed per image, {Sizes} (the instance buckets' size, as the A1111 extension generates them)"
            : "nothing: generate_class_images is off (training would use the images found)"),
    ], "Class images (prior preservation)");
}
