using System.Runtime.CompilerServices;
using DreamBooth.Pipelines;
using DreamBooth.Training;

namespace DreamBooth.Interactive;

/// <summary>
/// Class (prior-preservation) images of one concept before training: how many the recipe needs
/// (class images per instance image × instance images), how many usable images the class folder already
/// holds, and what would be generated for the shortfall (prompt, CFG, steps).
/// </summary>
public sealed record ClassImagePlan(string ClassDirectory, int InstanceImages, int PerInstance, int Found, int Unreadable,
    string ClassPrompt, string NegativePrompt, double GuidanceScale, int Steps, bool GenerateMissing)
{
#pragma warning disable CA2255 // registration list of this assembly's formatters, read by Formatters.Register
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Init() => Formatters.Add(() => Formatters.Html<ClassImagePlan>(p => p.ToHtml()));

    public int Needed => ClassImageRequest.NeededFor(InstanceImages, PerInstance);
    public int ToGenerate => Math.Max(0, Needed - Found);

    /// <summary>Counts the class folder (readable images, as <see cref="ClassImageGenerator"/> counts them) of <paramref name="concept"/> (a missing folder holds 0) for <paramref name="instanceImages"/> instance images.</summary>
    public static ClassImagePlan For(ConceptConfig concept, int instanceImages)
    {
        _ = ClassImageRequest.NeededFor(instanceImages, concept.ClassImagesPerInstance); // validates the counts
        var (readable, unreadable) = ClassImageGenerator.Scan(concept.ClassDir);
        int found = readable.Count;
        return new ClassImagePlan(concept.ClassDir, instanceImages, concept.ClassImagesPerInstance, found, unreadable.Count,
            concept.ClassPrompt, concept.ClassNegativePrompt, concept.ClassGuidanceScale, concept.ClassSteps, concept.GenerateClassImages);
    }

    public string Summary => ToGenerate == 0
        ? $"class images: {Found} found, {Needed} needed ({PerInstance} × {InstanceImages} instance images): nothing to generate"
        : GenerateMissing
            ? $"class images: {Found} found, {Needed} needed ({PerInstance} × {InstanceImages} instance images): {ToGenerate} would be generated with \"{ClassPrompt}\" (CFG {GuidanceScale}, {Steps} steps)"
            : $"class images: {Found} found, {Needed} needed ({PerInstance} × {InstanceImages} instance images): {ToGenerate} missing and generation is off";

    public override string ToString() => Summary;

    public string ToHtml() => Html.KeyValueTable(
    [
        ("class folder", string.IsNullOrWhiteSpace(ClassDirectory) ? "(none: no prior preservation)" : ClassDirectory),
        ("instance images", InstanceImages),
        ("class images per instance image", PerInstance),
        ("needed", Needed),
        ("found (readable)", Found),
        ("unreadable (not counted)", Unreadable),
        ("to generate", ToGenerate),
        ("would be generated with", ToGenerate == 0 ? "—" : GenerateMissing
            ? $"prompt \"{ClassPrompt}\"" + (string.IsNullOrEmpty(NegativePrompt) ? "" : $", negative \"{NegativePrompt}\"") + $", CFG {GuidanceScale}, {Steps} steps, one seed per image"
            : "nothing: generate_class_images is off (training would use the images found)"),
    ], "Class images (prior preservation)");
}
