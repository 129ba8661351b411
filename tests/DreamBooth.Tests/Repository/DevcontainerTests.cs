using System.Text.Json;
using DreamBooth.Runtime;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Repository;

public class DevcontainerTests
{
    public static IEnumerable<object[]> Files() =>
        Directory.GetFiles(Path.Combine(TestPaths.RepoRoot, ".devcontainer"), "devcontainer.json", SearchOption.AllDirectories)
            .Select(f => new object[] { Path.GetRelativePath(TestPaths.RepoRoot, f) });

    [Theory]
    [MemberData(nameof(Files))]
    public void Devcontainer_json_parses_and_its_dockerfile_exists(string relative)
    {
        var path = Path.Combine(TestPaths.RepoRoot, relative);
        using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip, AllowTrailingCommas = true });
        var root = doc.RootElement;
        Assert.False(string.IsNullOrWhiteSpace(root.GetProperty("name").GetString()));
        var build = root.GetProperty("build");
        var dir = Path.GetDirectoryName(path)!;
        var dockerfile = Path.GetFullPath(Path.Combine(dir, build.GetProperty("dockerfile").GetString()!));
        Assert.True(File.Exists(dockerfile), $"{relative}: {dockerfile} missing");
        var context = Path.GetFullPath(Path.Combine(dir, build.GetProperty("context").GetString()!));
        Assert.True(File.Exists(Path.Combine(context, "DreamBoothNotebooks.sln")), $"{relative}: build context {context} is not the repository root");
        Assert.Contains("FROM ", File.ReadAllText(dockerfile));
        var extensions = root.GetProperty("customizations").GetProperty("vscode").GetProperty("extensions").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("ms-dotnettools.dotnet-interactive-vscode", extensions);
    }

    [Fact]
    public void Gpu_devcontainer_asks_for_gpus_and_the_cuda_backend()
    {
        var path = Path.Combine(TestPaths.RepoRoot, ".devcontainer", "gpu", "devcontainer.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path), new JsonDocumentOptions { CommentHandling = JsonCommentHandling.Skip });
        var args = doc.RootElement.GetProperty("runArgs").EnumerateArray().Select(e => e.GetString()).ToList();
        Assert.Contains("--gpus", args);
        Assert.Equal("cuda", doc.RootElement.GetProperty("containerEnv").GetProperty("DREAMBOOTH_BACKEND").GetString());
    }

    [Fact]
    public void Gpu_devcontainer_pins_the_torch_whose_libtorch_torchsharp_was_built_against()
    {
        // the libtorch version TorchSharp brings is the libtorch-cpu package restored with it (this test assembly's deps)
        using var deps = JsonDocument.Parse(File.ReadAllText(Path.Combine(AppContext.BaseDirectory, "DreamBooth.Tests.deps.json")));
        var libtorch = deps.RootElement.GetProperty("libraries").EnumerateObject()
            .Select(p => p.Name).Single(n => n.StartsWith("libtorch-cpu-linux-x64/", StringComparison.Ordinal));
        string version = libtorch["libtorch-cpu-linux-x64/".Length..];
        Assert.Equal(TorchRuntime.BuiltAgainstLibTorch, version);
        var dockerfile = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, ".devcontainer", "gpu", "Dockerfile"));
        Assert.Contains($"ARG TORCH_VERSION={version}", dockerfile);
        Assert.Contains("\"torch==${TORCH_VERSION}\"", dockerfile);
        Assert.Matches(@"whl/cu12\d", dockerfile);
    }

    [Fact]
    public void Ci_runs_exactly_the_readme_test_command()
    {
        var readme = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, "README.md"));
        var quick = readme[readme.IndexOf("## Quick start", StringComparison.Ordinal)..];
        var start = quick.IndexOf("```", StringComparison.Ordinal);
        var bodyStart = quick.IndexOf('\n', start) + 1;
        var end = quick.IndexOf("```", bodyStart, StringComparison.Ordinal);
        var commands = quick[bodyStart..end].Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        Assert.Equal(2, commands.Length);
        var ci = File.ReadAllText(Path.Combine(TestPaths.RepoRoot, ".ci", "run"));
        Assert.Contains(commands[1], ci);
    }
}
