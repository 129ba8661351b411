using System.Runtime.CompilerServices;
using DreamBooth.Runtime;

namespace DreamBooth.Tests.Infrastructure;

/// <summary>Locations tests read from: the repository root, data-samples/ and tests/fixtures/ — only what the repository holds.</summary>
public static class TestPaths
{
    public static string RepoRoot { get; } = FindRepoRoot();

    public static string DataSamples => Path.Combine(RepoRoot, "data-samples");

    public static string Fixtures => Path.Combine(RepoRoot, "tests", "fixtures");

    /// <summary>CLIP's own BPE vocabulary (OpenAI, MIT: tests/fixtures/clip/LICENSE).</summary>
    public static string ClipBpeGz => Path.Combine(Fixtures, "clip", "bpe_simple_vocab_16e6.txt.gz");

    /// <summary>A sample photo of data-samples/photos (provenance in its README).</summary>
    public static string Photo(string name) => Path.Combine(DataSamples, "photos", name);

    /// <summary>A fresh empty folder under the system temp dir, removed when disposed.</summary>
    public static TempDir NewTempDir([CallerMemberName] string? name = null) => new(name ?? "test");

    static string FindRepoRoot()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
            if (File.Exists(Path.Combine(dir.FullName, "DreamBoothNotebooks.sln"))) return dir.FullName;
        throw new InvalidOperationException("DreamBoothNotebooks.sln not found above " + AppContext.BaseDirectory);
    }
}

public sealed class TempDir : IDisposable
{
    public string Path { get; }
    public TempDir(string name)
    {
        // a shortened name, never a shortened GUID: every folder is unique, also across parallel test runs
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "dreambooth-tests", $"{name[..Math.Min(name.Length, 40)]}-{Guid.NewGuid():N}");
        Directory.CreateDirectory(Path);
    }
    public string File(string relative) => System.IO.Path.Combine(Path, relative);
    public override string ToString() => Path;
    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { } catch (UnauthorizedAccessException) { }
    }
}

/// <summary>Loads torch once for the whole test assembly, before any test touches TorchSharp.</summary>
static class TorchInit
{
    [ModuleInitializer]
    internal static void Init()
    {
        TorchRuntime.Initialize();
        TorchSharp.torch.set_num_threads(Math.Max(1, Environment.ProcessorCount));
    }
}
