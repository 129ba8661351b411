using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Runtime;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench load`: checkpoint load time, read rate and peak RAM. Random SD1.5 weights are written as one
/// .safetensors (and/or a diffusers folder, `--layouts`) per stored dtype (one dtype on disk at a time: its files are
/// deleted before the next are written); each is then loaded in a fresh child process (`bench load --child FILE`) per load dtype and run, so the peak
/// resident memory (VmHWM) is that of one load alone. Before each load `cat FILE > /dev/null` is timed: it puts the
/// file in the page cache and gives the floor a load's read rate is compared with.
/// </summary>
public sealed class BenchLoadCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = new Option<bool>("--tiny") { Description = "Tiny configs of the same architectures instead of full-size SD1.5" };
        var dtypes = new Option<string>("--dtypes") { Description = "Stored float types to write and load", DefaultValueFactory = _ => "fp16,fp32" };
        var layouts = new Option<string>("--layouts") { Description = "Layouts to write and load: single (an A1111 .safetensors), diffusers (a folder)", DefaultValueFactory = _ => "single" };
        var loadDtypes = new Option<string>("--load-dtypes") { Description = "Dtypes to load into: fp32, fp16, bf16, or 'stored' (the file's own)", DefaultValueFactory = _ => "fp32,stored" };
        var repeat = new Option<int>("--repeat") { Description = "Loads per file and load dtype, each in its own process (the file is in the page cache for all of them)", DefaultValueFactory = _ => 3 };
        var file = new Option<string?>("--file") { Description = "Load this existing checkpoint (single file, or a folder with config/ beside it) instead of writing random ones" };
        var dir = new Option<string?>("--dir") { Description = "Folder for the generated files (default: the temp folder); they are deleted afterwards" };
        var keep = new Option<bool>("--keep") { Description = "Keep the generated files (in --dir) for later `--file` runs instead of deleting them" };
        var child = new Option<string?>("--child") { Description = "(internal) load FILE in this process and print the measurement", Hidden = true };
        var childDtype = new Option<string?>("--child-dtype") { Description = "(internal) load dtype of --child", Hidden = true };
        var cmd = new Command("load", "Checkpoint load time, GB/s (beside `cat`'s) and peak RAM, each load in a fresh process (JSON lines)");
        foreach (var o in new Option[] { tiny, dtypes, layouts, loadDtypes, repeat, file, dir, keep, child, childDtype }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            bool isTiny = parse.GetValue(tiny);
            if (parse.GetValue(child) is { } childFile)
            {
                var d = parse.GetValue(childDtype) is { } cd ? BenchSupport.ParseDtype(cd, "--child-dtype") : ScalarType.Float32;
                w.WriteLine(LoadHere(childFile, isTiny, d));
                return CliApp.Ok;
            }
            int reps = parse.GetValue(repeat);
            if (reps < 1) throw new DreamBoothException("--repeat: expected at least 1");
            var wanted = ParseLoadDtypes(parse.GetValue(loadDtypes)!);
            if (parse.GetValue(file) is { } given)
            {
                if (!File.Exists(given) && !Directory.Exists(given)) throw new DreamBoothException($"--file {given}: no such file or folder");
                var path = Path.GetFullPath(given);
                await RunCases(w, path, StoredDtype(path), wanted, reps, isTiny, ct);
                return CliApp.Ok;
            }
            var stored = parse.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(n => BenchSupport.ParseDtype(n, "--dtypes")).ToList();
            var layoutList = parse.GetValue(layouts)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
                .Select(l => l.ToLowerInvariant() is "single" or "diffusers" ? l.ToLowerInvariant() : throw new DreamBoothException($"--layouts: expected single and/or diffusers, got '{l}'"))
                .Distinct().ToList();
            if (layoutList.Count == 0) throw new DreamBoothException("--layouts: expected single and/or diffusers");
            bool keepFiles = parse.GetValue(keep);
            if (keepFiles && parse.GetValue(dir) is null) throw new DreamBoothException("--keep: name the folder to keep the files in with --dir");
            var folder = keepFiles ? Path.GetFullPath(parse.GetValue(dir)!)
                : Path.Combine(parse.GetValue(dir) is { } root ? Path.GetFullPath(root) : Path.GetTempPath(), $"dreambooth-bench-load-{Guid.NewGuid():N}");
            Directory.CreateDirectory(folder);
            try
            {
                CliApp.Torch();
                foreach (var type in stored)
                {
                    var name = BenchSupport.DtypeName(type);
                    var paths = layoutList.Select(l => l == "single" ? Path.Combine(folder, $"random-{name}.safetensors") : Path.Combine(folder, $"random-{name}-diffusers")).ToList();
                    // the random model lives only while its files are written, so it does not crowd the children's page cache
                    using (var sd = StableDiffusionModel.CreateRandom(
                        isTiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15,
                        isTiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15,
                        isTiny ? AutoencoderKLConfig.Tiny : AutoencoderKLConfig.StableDiffusion15,
                        BenchSupport.ByteTokenizer(), seed: 1))
                    {
                        if (layoutList.Contains("single")) sd.SaveSingleFile(paths[layoutList.IndexOf("single")], type);
                        if (layoutList.Contains("diffusers"))
                        {
                            sd.To(CPU, type); // diffusers folders store the modules' own dtype
                            sd.SaveDiffusers(paths[layoutList.IndexOf("diffusers")]);
                        }
                    }
                    try
                    {
                        foreach (var path in paths) await RunCases(w, path, type, wanted, reps, isTiny, ct);
                    }
                    finally
                    {
                        if (!keepFiles)
                            foreach (var path in paths)
                                if (Directory.Exists(path)) Directory.Delete(path, recursive: true); else File.Delete(path);
                    }
                }
            }
            finally
            {
                if (!keepFiles) try { Directory.Delete(folder, recursive: true); } catch (IOException) { }
            }
            return CliApp.Ok;
        });
        return cmd;
    }

    /// <summary>"fp32,stored" → load dtypes, null standing for the file's own.</summary>
    static List<ScalarType?> ParseLoadDtypes(string value)
    {
        var list = new List<ScalarType?>();
        foreach (var part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
            list.Add(part.Equals("stored", StringComparison.OrdinalIgnoreCase) ? null : BenchSupport.ParseDtype(part, "--load-dtypes"));
        if (list.Count == 0) throw new DreamBoothException("--load-dtypes: expected at least one of fp32, fp16, bf16, stored");
        return list;
    }

    /// <summary>The float dtype most of a safetensors file's bytes are stored in (fp32 for anything else).</summary>
    static ScalarType StoredDtype(string path)
    {
        if (Directory.Exists(path))
        {
            // a diffusers folder: what its UNet stores
            var unet = Path.Combine(path, "unet");
            var weights = Directory.Exists(unet) ? Directory.EnumerateFiles(unet, "*.safetensors").Order(StringComparer.Ordinal).FirstOrDefault() : null;
            return weights is null ? ScalarType.Float32 : StoredDtype(weights);
        }
        if (!path.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase)) return ScalarType.Float32;
        using var f = SafeTensors.Open(path);
        return f.Tensors.Where(t => t.ScalarType is ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16)
            .GroupBy(t => t.ScalarType).OrderByDescending(g => g.Sum(t => t.ByteLength)).Select(g => g.Key).DefaultIfEmpty(ScalarType.Float32).First();
    }

    static async Task RunCases(TextWriter w, string path, ScalarType stored, List<ScalarType?> wanted, int reps, bool tiny, CancellationToken ct)
    {
        foreach (var loadDtype in wanted.Select(d => d ?? stored).Distinct())
        {
            var runs = new List<Dictionary<string, object?>>();
            for (int r = 0; r < reps; r++)
            {
                ct.ThrowIfCancellationRequested();
                var cat = await CatSeconds(path, ct);
                var json = await RunChild(path, tiny, loadDtype, ct);
                using var doc = JsonDocument.Parse(json);
                var merged = new Dictionary<string, object?> { ["bench"] = "load", ["stored_dtype"] = BenchSupport.DtypeName(stored), ["run"] = r + 1 };
                foreach (var p in doc.RootElement.EnumerateObject()) merged[p.Name] = p.Value.Clone();
                long bytes = SourceBytes(path);
                merged["cat_seconds"] = cat is double c ? BenchSupport.Round(c, 3) : null;
                merged["cat_gb_per_s"] = cat is double c2 && c2 > 0 ? BenchSupport.Round(bytes / 1e9 / c2, 2) : null;
                merged["load_average"] = BenchSupport.LoadAverage();
                runs.Add(merged);
                w.WriteLine(BenchSupport.Json(merged));
            }
            if (reps > 1) w.WriteLine(BenchSupport.Json(Summary(runs)));
        }
    }

    /// <summary>Min and median over the runs of one case (the machine is shared: the min is the code, the spread is the neighbours).</summary>
    static Dictionary<string, object?> Summary(List<Dictionary<string, object?>> runs)
    {
        double[] Values(string key) => runs.Select(r => r[key] switch
        {
            JsonElement { ValueKind: JsonValueKind.Number } e => e.GetDouble(),
            double d => d,
            _ => double.NaN,
        }).Where(double.IsFinite).Order().ToArray();
        static double? Median(double[] v) => v.Length == 0 ? null : v.Length % 2 == 1 ? v[v.Length / 2] : (v[v.Length / 2 - 1] + v[v.Length / 2]) / 2;
        var first = runs[0];
        var s = new Dictionary<string, object?>
        {
            ["bench"] = "load",
            ["summary"] = true,
            ["file"] = first["file"],
            ["layout"] = first["layout"],
            ["stored_dtype"] = first["stored_dtype"],
            ["loaded_dtype"] = first["loaded_dtype"],
            ["runs"] = runs.Count,
            ["model_mib"] = first["model_mib"],
        };
        foreach (var (key, best) in new[] { ("load_seconds", "min"), ("gb_per_s", "max"), ("load_cpu_seconds", "min"), ("gb_per_cpu_s", "max"), ("runqueue_wait_seconds", "min"), ("peak_rss_mib", "min"), ("peak_over_model", "min"), ("cat_gb_per_s", "max") })
        {
            var v = Values(key);
            s[$"{key}_{best}"] = v.Length == 0 ? null : best == "min" ? v[0] : v[^1];
            s[$"{key}_median"] = Median(v) is double m ? BenchSupport.Round(m, 3) : null;
        }
        s["load_average_max"] = Values("load_average") is { Length: > 0 } la ? la[^1] : null;
        return s;
    }

    /// <summary>The checkpoint's weight files: the file itself, or every weight file of a folder.</summary>
    static List<string> WeightFiles(string path) => File.Exists(path)
        ? [path]
        : Directory.EnumerateFiles(path, "*", SearchOption.AllDirectories)
            .Where(f => f.EndsWith(".safetensors", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".ckpt", StringComparison.OrdinalIgnoreCase) || f.EndsWith(".bin", StringComparison.OrdinalIgnoreCase))
            .Order(StringComparer.Ordinal).ToList();

    /// <summary>Bytes of the checkpoint's weight files.</summary>
    static long SourceBytes(string path) => WeightFiles(path).Sum(f => new FileInfo(f).Length);

    /// <summary>Loads one checkpoint in this process; the JSON measurement of this load.</summary>
    static string LoadHere(string path, bool tiny, ScalarType dtype)
    {
        long rssBefore = ProcessMemory.ResidentBytes() ?? 0;
        var clock = Stopwatch.StartNew();
        CliApp.Torch();
        double torchSeconds = clock.Elapsed.TotalSeconds;
        var options = new ModelLoadOptions
        {
            Tokenizer = BenchSupport.ByteTokenizer(),
            TextEncoderConfig = tiny ? CLIPTextConfig.Tiny : null,
            UNetConfig = tiny ? UNet2DConditionConfig.Tiny : null,
            VaeConfig = tiny ? AutoencoderKLConfig.Tiny : null,
            Dtype = dtype,
        };
        long rssTorch = ProcessMemory.ResidentBytes() ?? 0;
        using var self = Process.GetCurrentProcess();
        var cpuBefore = self.TotalProcessorTime;
        double? waitBefore = RunQueueWaitSeconds();
        var load = Stopwatch.StartNew();
        using var sd = StableDiffusionModel.Load(path, options);
        double seconds = load.Elapsed.TotalSeconds;
        self.Refresh();
        double cpuSeconds = (self.TotalProcessorTime - cpuBefore).TotalSeconds;
        double? waited = RunQueueWaitSeconds() - waitBefore;
        long? peak = ProcessMemory.PeakResidentBytes();
        var parameters = sd.UNet.parameters().Concat(sd.TextEncoder.parameters()).Concat(sd.Vae.parameters()).ToList();
        long count = parameters.Sum(p => p.NumberOfElements);
        long modelBytes = parameters.Sum(p => p.NumberOfElements * p.ElementSize);
        long fileBytes = SourceBytes(path);
        return JsonSerializer.Serialize(new
        {
            file = Path.GetFileName(path),
            layout = Directory.Exists(path) ? "diffusers" : "single",
            file_mib = fileBytes >> 20,
            parameters = count,
            loaded_dtype = BenchSupport.DtypeName(parameters[0].dtype),
            load_seconds = BenchSupport.Round(seconds, 3),
            gb_per_s = BenchSupport.Round(fileBytes / 1e9 / seconds, 2),
            // CPU time of the load (all threads): on a shared machine the wall clock mostly measures the neighbours
            load_cpu_seconds = BenchSupport.Round(cpuSeconds, 3),
            gb_per_cpu_s = cpuSeconds > 0 ? BenchSupport.Round(fileBytes / 1e9 / cpuSeconds, 2) : (double?)null,
            // time this process's threads spent runnable but waiting for a CPU during the load (other processes' share)
            runqueue_wait_seconds = waited is double ws ? BenchSupport.Round(ws, 3) : (double?)null,
            torch_init_seconds = BenchSupport.Round(torchSeconds, 3),
            model_mib = modelBytes >> 20,
            peak_rss_mib = peak is long p ? p >> 20 : (long?)null,
            peak_over_model = peak is long p2 && modelBytes > 0 ? BenchSupport.Round((double)p2 / modelBytes, 3) : (double?)null,
            load_peak_over_model = peak is long p3 && modelBytes > 0 ? BenchSupport.Round((double)(p3 - rssTorch) / modelBytes, 3) : (double?)null,
            rss_after_mib = ProcessMemory.ResidentBytes() is long a ? a >> 20 : (long?)null,
            rss_before_load_mib = rssTorch >> 20,
            rss_at_start_mib = rssBefore >> 20,
            torch_threads = get_num_threads(),
        });
    }

    /// <summary>
    /// Seconds this process's threads have spent runnable but not running (Linux schedstat, summed over threads), or
    /// null where unknown: on a shared machine it says how much of a wall-clock figure was waiting for a CPU.
    /// </summary>
    static double? RunQueueWaitSeconds()
    {
        try
        {
            double total = 0;
            foreach (var task in Directory.GetDirectories("/proc/self/task"))
            {
                try
                {
                    var fields = File.ReadAllText(Path.Combine(task, "schedstat")).Split(' ', StringSplitOptions.RemoveEmptyEntries);
                    if (fields.Length >= 2 && long.TryParse(fields[1], out long ns)) total += ns / 1e9;
                }
                catch (IOException) { } // the thread ended
            }
            return total;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { return null; }
    }

    /// <summary>Seconds `cat FILES > /dev/null` takes (reads the weight files into the page cache; its rate is the floor for a load), or null without sh.</summary>
    static async Task<double?> CatSeconds(string path, CancellationToken ct)
    {
        var files = WeightFiles(path);
        if (files.Count == 0 || OperatingSystem.IsWindows()) return null;
        var psi = new ProcessStartInfo("/bin/sh") { UseShellExecute = false, RedirectStandardError = true };
        foreach (var a in new[] { "-c", "cat \"$@\" > /dev/null", "sh" }) psi.ArgumentList.Add(a);
        foreach (var f in files) psi.ArgumentList.Add(f);
        try
        {
            var clock = Stopwatch.StartNew();
            using var proc = Process.Start(psi);
            if (proc is null) return null;
            await proc.WaitForExitAsync(ct);
            return proc.ExitCode == 0 ? clock.Elapsed.TotalSeconds : null;
        }
        catch (System.ComponentModel.Win32Exception) { return null; }
    }

    /// <summary>Runs `dreambooth bench load --child FILE` in a new process and returns its JSON line.</summary>
    static async Task<string> RunChild(string path, bool tiny, ScalarType dtype, CancellationToken ct)
    {
        var (exe, prefix) = SelfCommand();
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "bench", "load", "--child", path, "--child-dtype", BenchSupport.DtypeName(dtype) }) psi.ArgumentList.Add(a);
        if (tiny) psi.ArgumentList.Add("--tiny");
        using var proc = Process.Start(psi) ?? throw new InvalidOperationException($"could not start {exe}");
        var stdout = proc.StandardOutput.ReadToEndAsync(ct);
        var stderr = proc.StandardError.ReadToEndAsync(ct);
        await proc.WaitForExitAsync(ct);
        var output = await stdout;
        if (proc.ExitCode != 0)
            throw new InvalidOperationException($"bench load child exited with {proc.ExitCode}: {(await stderr).Trim()}");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Last(l => l.StartsWith('{'));
    }

    /// <summary>How to start this CLI again: the apphost (`dreambooth`) when there is one, else `dotnet dreambooth.dll`.</summary>
    static (string Exe, string[] Prefix) SelfCommand()
    {
        var process = Environment.ProcessPath;
        if (process is not null && Path.GetFileNameWithoutExtension(process) == "dreambooth") return (process, []);
        var dll = typeof(BenchLoadCommand).Assembly.Location;
        var apphost = Path.Combine(Path.GetDirectoryName(dll)!, OperatingSystem.IsWindows() ? "dreambooth.exe" : "dreambooth");
        if (File.Exists(apphost)) return (apphost, []);
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH")
                     ?? (process is not null && Path.GetFileNameWithoutExtension(process) == "dotnet" ? process : "dotnet");
        return (dotnet, [dll]);
    }
}
