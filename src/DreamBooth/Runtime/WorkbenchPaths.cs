namespace DreamBooth.Runtime;

/// <summary>Where the workbench looks for and keeps things. Everything can be redirected by environment variables.</summary>
public static class WorkbenchPaths
{
    /// <summary>Hugging Face hub cache, as huggingface_hub resolves it: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub.</summary>
    public static string HuggingFaceHubCache
    {
        get
        {
            var hub = Environment.GetEnvironmentVariable("HF_HUB_CACHE");
            if (!string.IsNullOrEmpty(hub)) return hub;
            var home = Environment.GetEnvironmentVariable("HF_HOME");
            if (!string.IsNullOrEmpty(home)) return Path.Combine(home, "hub");
            var xdg = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
            var user = Environment.GetFolderPath(Environment.SpecialFolder.UserProfile);
            return Path.Combine(string.IsNullOrEmpty(xdg) ? Path.Combine(user, ".cache") : xdg, "huggingface", "hub");
        }
    }

    /// <summary>The workbench's own cache (libstdc++ compat copy, latent cache default, downloaded assets).</summary>
    public static string Cache => TorchRuntime.CacheDirectory;

    /// <summary>
    /// The repository's assets folder for models fetched by set-up (BlazeFace ONNX, fonts):
    /// $DREAMBOOTH_ASSETS, else the nearest ancestor of the app/current folder holding `.cache/assets`.
    /// </summary>
    public static string? FindUpwards(string relative)
    {
        foreach (var start in new[] { AppContext.BaseDirectory, Directory.GetCurrentDirectory() })
        {
            for (var dir = new DirectoryInfo(start); dir is not null; dir = dir.Parent)
            {
                var candidate = Path.Combine(dir.FullName, relative);
                if (File.Exists(candidate) || Directory.Exists(candidate)) return candidate;
            }
        }
        return null;
    }
}

/// <summary>Run-time assets fetched by the build (build/fetch-assets.sh): BlazeFace models and fonts.</summary>
public static class WorkbenchAssets
{
    public const string BlazeFaceShortRange = "blazeface/face_detection_front_128x128_barracuda.onnx";
    public const string BlazeFaceBack = "blazeface/face_detection_back_256x256_barracuda.onnx";
    public const string FontRegular = "fonts/DejaVuSans.ttf";
    public const string FontBold = "fonts/DejaVuSans-Bold.ttf";

    /// <summary>Full path of an asset; a clear error when the build has not fetched it.</summary>
    public static string Find(string relative)
    {
        foreach (var dir in Roots())
        {
            var p = Path.Combine(dir, relative);
            if (File.Exists(p)) return p;
        }
        throw new DreamBoothException($"asset '{relative}' not found (looked in {string.Join(", ", Roots())}); build the project once (it runs build/fetch-assets.sh) or set DREAMBOOTH_ASSETS");
    }

    static IEnumerable<string> Roots()
    {
        var env = Environment.GetEnvironmentVariable("DREAMBOOTH_ASSETS");
        if (!string.IsNullOrEmpty(env)) yield return env;
        yield return Path.Combine(AppContext.BaseDirectory, "assets");
        var self = Path.GetDirectoryName(typeof(WorkbenchAssets).Assembly.Location);
        if (!string.IsNullOrEmpty(self)) yield return Path.Combine(self, "assets");
        var up = WorkbenchPaths.FindUpwards(Path.Combine(".cache", "assets"));
        if (up is not null) yield return up;
    }
}
