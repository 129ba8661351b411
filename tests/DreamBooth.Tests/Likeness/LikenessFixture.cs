using System.Text.Json;
using DreamBooth.Likeness;
using DreamBooth.Models.FaceRecognition;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Likeness;

/// <summary>One face describer (BlazeFace + face-api's recognition net) shared by a test class.</summary>
public sealed class DescriberFixture : IDisposable
{
    public FaceDescriber Describer { get; } = FaceDescriber.Create();
    public void Dispose() => Describer.Dispose();
}

static class LikenessFixtures
{
    public static string Folder => Path.Combine(TestPaths.Fixtures, "likeness");
    public static string Crops => Path.Combine(Folder, "crops");

    /// <summary>tests/fixtures/likeness/reference-descriptors.json: face-api's descriptors (tfjs, wasm) of the fixture crops.</summary>
    public static IReadOnlyDictionary<string, float[]> ReferenceDescriptors()
    {
        using var doc = JsonDocument.Parse(File.ReadAllBytes(Path.Combine(Folder, "reference-descriptors.json")));
        return doc.RootElement.GetProperty("descriptors").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(v => v.GetSingle()).ToArray());
    }
}
