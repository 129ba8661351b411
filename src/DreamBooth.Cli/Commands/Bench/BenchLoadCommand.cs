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
/// `dreambooth bench load`: single-file checkpoint load time and peak RAM. Random SD1.5 weights are written
/// once (fp16 and fp32 .safetensors) to a temp folder; each file is then loaded in a fresh child process
/// (`bench load --child FILE`) so the peak resident memory (VmHWM) is that of the load alone.
/// </summary>
public sealed class BenchLoadCommand : IBenchSubcommand
{
    public Command Build()
    {
        var tiny = new Option<bool>("--tiny") { Description = "Tiny configs of the same architectures instead of full-size SD1.5" };
        var dtypes = new Option<string>("--dtypes") { Description = "Stored float types to write and load", DefaultValueFactory = _ => "fp16,fp32" };
        var repeat = new Option<int>("--repeat") { Description = "Loads per file (each in its own process; the file stays in the page cache after the first)", DefaultValueFactory = _ => 2 };
        var file = new Option<string?>("--file") { Description = "Load this existing single-file checkpoint instead of writing random ones" };
        var child = new Option<string?>("--child") { Description = "(internal) load FILE in this process and print the measurement", Hidden = true };
        var cmd = new Command("load", "Single-file checkpoint load time and peak RAM, each load in a fresh process (JSON lines)");
        foreach (var o in new Option[] { tiny, dtypes, repeat, file, child }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            bool isTiny = parse.GetValue(tiny);
            if (parse.GetValue(child) is { } childFile)
            {
                w.WriteLine(LoadHere(childFile, isTiny));
                return CliApp.Ok;
            }
            int reps = parse.GetValue(repeat);
            if (reps < 1) throw new DreamBoothException("--repeat: expected at least 1");
            var files = new List<(string Path, string Dtype)>();
            string? dir = null;
            try
            {
                if (parse.GetValue(file) is { } given)
                {
                    if (!File.Exists(given)) throw new DreamBoothException($"--file {given}: no such file");
                    files.Add((Path.GetFullPath(given), "as stored"));
                }
                else
                {
                    CliApp.Torch();
                    dir = Path.Combine(Path.GetTempPath(), $"dreambooth-bench-load-{Guid.NewGuid():N}");
                    Directory.CreateDirectory(dir);
                    using var sd = StableDiffusionModel.CreateRandom(
                        isTiny ? CLIPTextConfig.Tiny : CLIPTextConfig.StableDiffusion15,
                        isTiny ? UNet2DConditionConfig.Tiny : UNet2DConditionConfig.StableDiffusion15,
                        isTiny ? AutoencoderKLConfig.Tiny : AutoencoderKLConfig.StableDiffusion15,
                        BenchSupport.ByteTokenizer(), seed: 1);
                    foreach (var name in parse.GetValue(dtypes)!.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
                    {
                        var type = BenchSupport.ParseDtype(name, "--dtypes");
                        var path = Path.Combine(dir, $"random-{BenchSupport.DtypeName(type)}.safetensors");
                        sd.SaveSingleFile(path, type);
                        files.Add((path, BenchSupport.DtypeName(type)));
                    }
                }
                foreach (var (path, dtype) in files)
                    for (int r = 0; r < reps; r++)
                    {
                        ct.ThrowIfCancellationRequested();
                        var json = await RunChild(path, isTiny, ct);
                        using var doc = JsonDocument.Parse(json);
                        var merged = new Dictionary<string, object?> { ["bench"] = "load", ["stored_dtype"] = dtype, ["run"] = r + 1 };
                        foreach (var p in doc.RootElement.EnumerateObject()) merged[p.Name] = p.Value.Clone();
                        merged["load_average"] = BenchSupport.LoadAverage();
                        w.WriteLine(BenchSupport.Json(merged));
                    }
            }
            finally
            {
                if (dir is not null) try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
            }
            return CliApp.Ok;
        });
        return cmd;
    }

    /// <summary>Loads one file in this process; the JSON measurement of this load.</summary>
    static string LoadHere(string path, bool tiny)
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
        };
        long rssTorch = ProcessMemory.ResidentBytes() ?? 0;
        var load = Stopwatch.StartNew();
        using var sd = StableDiffusionModel.Load(path, options);
        double seconds = load.Elapsed.TotalSeconds;
        long parameters = sd.UNet.parameters().Concat(sd.TextEncoder.parameters()).Concat(sd.Vae.parameters()).Sum(p => p.NumberOfElements);
        var dtype = sd.UNet.parameters().First().dtype;
        return JsonSerializer.Serialize(new
        {
            file = Path.GetFileName(path),
            file_mib = new FileInfo(path).Length >> 20,
            parameters,
            loaded_dtype = BenchSupport.DtypeName(dtype),
            load_seconds = BenchSupport.Round(seconds, 3),
            torch_init_seconds = BenchSupport.Round(torchSeconds, 3),
            peak_rss_mib = ProcessMemory.PeakResidentBytes() is long p ? p >> 20 : (long?)null,
            rss_after_mib = ProcessMemory.ResidentBytes() is long a ? a >> 20 : (long?)null,
            rss_before_load_mib = rssTorch >> 20,
            rss_at_start_mib = rssBefore >> 20,
            model_mib = parameters * 4 >> 20,
        });
    }

    /// <summary>Runs `dreambooth bench load --child FILE` in a new process and returns its JSON line.</summary>
    static async Task<string> RunChild(string path, bool tiny, CancellationToken ct)
    {
        var (exe, prefix) = SelfCommand();
        var psi = new ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in prefix) psi.ArgumentList.Add(a);
        foreach (var a in new[] { "bench", "load", "--child", path }) psi.ArgumentList.Add(a);
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
