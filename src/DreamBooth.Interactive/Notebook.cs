using DreamBooth.Runtime;

namespace DreamBooth.Interactive;

/// <summary>What the first cell of every notebook shows: the runtime in use and the paths the notebook will read.</summary>
public sealed record NotebookEnvironment(TorchRuntimeInfo Runtime, string RepoRoot, string DataSamples, string WorkDirectory);

/// <summary>
/// The shared set-up every notebook runs (through <c>#!import _setup.dib</c>): loads torch, registers the
/// formatters, and resolves notebook parameters from environment variables so the same notebook runs on
/// the embedded default or on a user's own model and photos.
/// </summary>
public static class Notebook
{
    /// <summary>Environment variable naming the folder where notebooks write their outputs (default: runs/ under the repo).</summary>
    public const string WorkDirEnv = "DREAMBOOTH_NOTEBOOK_WORKDIR";

    public static NotebookEnvironment Setup()
    {
        NativeLibraries.Register(typeof(SkiaSharp.SKObject).Assembly);
        var runtime = TorchRuntime.Initialize();
        Formatters.Register();
        Charts.ResetEmbeddedScript();
        Formatters.Html<NotebookEnvironment>(e => Html.KeyValueTable(
        [
            ("backend", $"{e.Runtime.Backend.ToString().ToLowerInvariant()} ({e.Runtime.LibTorchDirectory})"),
            ("TorchSharp", e.Runtime.TorchSharpVersion),
            ("libstdc++ compat copy", e.Runtime.LibStdCxxCompatCopy ? "in use" : "not needed"),
            ("CUDA", e.Runtime.CudaAvailable ? $"{e.Runtime.CudaDeviceCount} device(s)" : "not available"),
            ("repository", e.RepoRoot),
            ("outputs", e.WorkDirectory),
        ], "DreamBooth Notebooks"));
        var root = RepoRoot();
        var work = Parameter(WorkDirEnv, Path.Combine(root, "runs", "notebooks"));
        Directory.CreateDirectory(work);
        return new NotebookEnvironment(runtime, root, Path.Combine(root, "data-samples"), work);
    }

    /// <summary>
    /// Loads a base model named by a config: single file (with its <c>config/</c> + <c>tokenizer/</c> sidecar, as the
    /// embedded toy model's folder has), diffusers folder or Hub repo id, through
    /// <see cref="DreamBooth.Checkpoints.StableDiffusionModel.Load"/>.
    /// </summary>
    public static DreamBooth.Checkpoints.StableDiffusionModel LoadModel(string pathOrRepoId) =>
        DreamBooth.Checkpoints.StableDiffusionModel.Load(pathOrRepoId);

    /// <summary>
    /// How to load single-file saves of a run whose base model is <paramref name="baseModel"/> (single files carry no
    /// configs): the toy folder's options, else the base model's own configs and tokenizer.
    /// </summary>
    public static DreamBooth.Checkpoints.ModelLoadOptions LoadOptionsFor(string pathOrRepoId, DreamBooth.Checkpoints.StableDiffusionModel baseModel) =>
        IsToyFolder(pathOrRepoId) ? DreamBooth.Toy.ToyAssets.LoadOptions(pathOrRepoId) : new DreamBooth.Checkpoints.ModelLoadOptions
        {
            Tokenizer = baseModel.Tokenizer, TextEncoderConfig = baseModel.TextEncoder.Config, UNetConfig = baseModel.UNet.Config, VaeConfig = baseModel.Vae.Config,
        };

    static bool IsToyFolder(string path) =>
        Directory.Exists(path) && File.Exists(Path.Combine(path, DreamBooth.Toy.ToyAssets.CheckpointFileName)) && Directory.Exists(Path.Combine(path, "config"));

    /// <summary>A notebook parameter: the environment variable when set, else the default.</summary>
    public static string Parameter(string name, string defaultValue)
    {
        var v = Environment.GetEnvironmentVariable(name);
        return string.IsNullOrWhiteSpace(v) ? defaultValue : v;
    }

    /// <summary>The repository root: $DREAMBOOTH_REPO, else the nearest folder above the current one (or this assembly) holding DreamBoothNotebooks.sln.</summary>
    public static string RepoRoot()
    {
        var env = Environment.GetEnvironmentVariable("DREAMBOOTH_REPO");
        if (!string.IsNullOrEmpty(env)) return env;
        foreach (var start in new[] { Directory.GetCurrentDirectory(), AppContext.BaseDirectory, Path.GetDirectoryName(typeof(Notebook).Assembly.Location) ?? "." })
            for (var d = new DirectoryInfo(start); d is not null; d = d.Parent)
                if (File.Exists(Path.Combine(d.FullName, "DreamBoothNotebooks.sln"))) return d.FullName;
        throw new DreamBoothException("cannot find the repository (DreamBoothNotebooks.sln) above the notebook folder; set DREAMBOOTH_REPO");
    }
}
