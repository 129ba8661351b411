using System.CommandLine;
using System.Globalization;
using System.Text;
using System.Text.Json;
using DreamBooth.Runtime;
using DreamBooth.Text;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>What the bench sub-commands share: device choice, the peak-memory probe, common JSON fields.</summary>
public static class BenchSupport
{
    public static Option<string?> DeviceOption() => new("--device") { Description = "cpu, cuda or cuda:N (default: cuda when available, else cpu)" };

    public static Option<bool?> TinyOption() => new("--tiny") { Description = "Tiny configs of the same architectures (default: on when no CUDA device is available)" };

    public static Device ParseDevice(string? value)
    {
        var d = (value ?? (cuda.is_available() ? "cuda" : "cpu")).Trim().ToLowerInvariant();
        if (!(d == "cpu" || d == "cuda" || (d.StartsWith("cuda:", StringComparison.Ordinal) && int.TryParse(d[5..], NumberStyles.None, CultureInfo.InvariantCulture, out _))))
            throw new DreamBoothException($"--device: expected cpu, cuda or cuda:N, got '{value}'");
        if (d != "cpu" && !cuda.is_available()) throw new DreamBoothException($"--device {d}: CUDA is not available in this build/machine (see 'dreambooth doctor')");
        return torch.device(d);
    }

    public static ScalarType ParseDtype(string value, string option) => value.Trim().ToLowerInvariant() switch
    {
        "fp32" or "float32" => ScalarType.Float32,
        "fp16" or "float16" => ScalarType.Float16,
        "bf16" or "bfloat16" => ScalarType.BFloat16,
        _ => throw new DreamBoothException($"{option}: expected fp32, fp16 or bf16, got '{value}'"),
    };

    public static string DtypeName(ScalarType t) => t switch
    {
        ScalarType.Float32 => "fp32",
        ScalarType.Float16 => "fp16",
        ScalarType.BFloat16 => "bf16",
        _ => t.ToString(),
    };

    /// <summary>"512x512,768x1024" → sizes (each side a multiple of <paramref name="multiple"/>).</summary>
    public static List<(int Width, int Height)> ParseSizes(string value, int multiple)
    {
        var list = new List<(int, int)>();
        foreach (var part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var (w, h) = Pipelines.GenerationRequest.ParseSize(part);
            if (w < multiple || h < multiple || w % multiple != 0 || h % multiple != 0)
                throw new DreamBoothException($"--sizes: {part}: width and height must be multiples of {multiple}");
            list.Add((w, h));
        }
        if (list.Count == 0) throw new DreamBoothException("--sizes: expected at least one WIDTHxHEIGHT");
        return list;
    }

    public static List<int> ParseInts(string value, string option)
    {
        var list = new List<int>();
        foreach (var part in value.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            if (!int.TryParse(part, NumberStyles.None, CultureInfo.InvariantCulture, out var n) || n < 1)
                throw new DreamBoothException($"{option}: expected positive integers separated by commas, got '{value}'");
            list.Add(n);
        }
        if (list.Count == 0) throw new DreamBoothException($"{option}: expected at least one value");
        return list;
    }

    /// <summary>"on", "off" or "both" → the values to run.</summary>
    public static bool[] ParseSwitch(string value, string option) => value.Trim().ToLowerInvariant() switch
    {
        "on" or "yes" or "true" => [true],
        "off" or "no" or "false" => [false],
        "both" => [false, true],
        _ => throw new DreamBoothException($"{option}: expected on, off or both, got '{value}'"),
    };

    /// <summary>How to start this CLI again: the apphost (`dreambooth`) when there is one, else `dotnet dreambooth.dll`.</summary>
    public static (string Exe, string[] Prefix) SelfCommand()
    {
        var process = Environment.ProcessPath;
        if (process is not null && Path.GetFileNameWithoutExtension(process) == "dreambooth") return (process, []);
        var dll = typeof(BenchSupport).Assembly.Location;
        var apphost = Path.Combine(Path.GetDirectoryName(dll)!, OperatingSystem.IsWindows() ? "dreambooth.exe" : "dreambooth");
        if (File.Exists(apphost)) return (apphost, []);
        var dotnet = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH")
                     ?? (process is not null && Path.GetFileNameWithoutExtension(process) == "dotnet" ? process : "dotnet");
        return (dotnet, [dll]);
    }

    /// <summary>A <see cref="System.Diagnostics.ProcessStartInfo"/> running this CLI with <paramref name="args"/> (output redirected).</summary>
    public static System.Diagnostics.ProcessStartInfo SelfStartInfo(IEnumerable<string> args)
    {
        var (exe, prefix) = SelfCommand();
        var psi = new System.Diagnostics.ProcessStartInfo(exe) { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false };
        foreach (var a in prefix.Concat(args)) psi.ArgumentList.Add(a);
        return psi;
    }

    /// <summary>Runs this CLI with <paramref name="args"/> in a child process; its last JSON line (an error naming the command when it fails).</summary>
    public static async Task<string> RunSelfForJson(IReadOnlyList<string> args, CancellationToken ct, IReadOnlyDictionary<string, string>? environment = null)
    {
        var psi = SelfStartInfo(args);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>()) psi.Environment[k] = v;
        using var proc = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException("could not start dreambooth again");
        var stdout = proc.StandardOutput.ReadToEndAsync(ct);
        var stderr = proc.StandardError.ReadToEndAsync(ct);
        await proc.WaitForExitAsync(ct);
        var output = await stdout;
        if (proc.ExitCode != 0)
            throw new InvalidOperationException($"dreambooth {string.Join(' ', args.Take(2))} child exited with {proc.ExitCode}: {(await stderr).Trim()}");
        return output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Last(l => l.StartsWith('{'));
    }

    /// <summary>Waits for queued GPU work, so wall-clock time covers it (no-op on CPU).</summary>
    public static void Sync(Device device)
    {
        if (device.type == DeviceType.CUDA) cuda.synchronize(device);
    }

    /// <summary>
    /// A CLIP tokenizer with only the 256 byte symbols (no merges, no download), written to a temp folder and
    /// loaded. Benchmarks on random weights need token ids, not a good segmentation; the special tokens keep
    /// CLIP's ids 49406/49407.
    /// </summary>
    public static ClipTokenizer ByteTokenizer()
    {
        var dir = Path.Combine(Path.GetTempPath(), $"dreambooth-bench-tokenizer-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            var vocab = new Dictionary<string, int>();
            foreach (var c in ByteSymbols()) vocab[c.ToString()] = vocab.Count;
            foreach (var c in ByteSymbols()) vocab[c + "</w>"] = vocab.Count;
            vocab[ClipTokenizer.StartOfText] = 49406;
            vocab[ClipTokenizer.EndOfText] = 49407;
            File.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(vocab), Encoding.UTF8);
            File.WriteAllText(Path.Combine(dir, "merges.txt"), "#version: 0.2\n", Encoding.UTF8);
            return ClipTokenizer.FromDirectory(dir);
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }

    /// <summary>GPT-2's byte → printable character table (the symbols of a byte-level BPE).</summary>
    static IEnumerable<char> ByteSymbols()
    {
        var printable = new List<int>();
        for (int b = '!'; b <= '~'; b++) printable.Add(b);
        for (int b = 0xA1; b <= 0xAC; b++) printable.Add(b);
        for (int b = 0xAE; b <= 0xFF; b++) printable.Add(b);
        int extra = 0;
        for (int b = 0; b < 256; b++)
            yield return printable.Contains(b) ? (char)b : (char)(256 + extra++);
    }

    /// <summary>The 1-minute load average (Linux), so that a figure taken on a busy machine says so; null elsewhere.</summary>
    public static double? LoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.Parse(first, CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return null; }
    }

    public static string DeviceName(Device device)
    {
        if (device.type != DeviceType.CUDA) return $"cpu ({Environment.ProcessorCount} cores, {torch.get_num_threads()} torch threads)";
        var gpus = Nvml.Devices();
        int index = Math.Max(0, (int)device.index);
        return index < gpus.Count ? $"{device} {gpus[index].Name}" : device.ToString();
    }

    static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    /// <summary>One JSON line (plain '+' and quotes, not \u escapes).</summary>
    public static string Json(object value) => JsonSerializer.Serialize(value, JsonOptions);

    public static double Round(double v, int digits = 3) => Math.Round(v, digits, MidpointRounding.AwayFromZero);

    /// <summary>
    /// <paramref name="v"/> to <paramref name="digits"/> significant digits: rates keep their precision however slow
    /// the case (a fixed 4 decimals left 0.0047 it/s with two digits, and it/s × s/it far from 1).
    /// </summary>
    public static double Significant(double v, int digits = 4)
    {
        if (v == 0 || !double.IsFinite(v)) return v;
        int decimals = digits - 1 - (int)Math.Floor(Math.Log10(Math.Abs(v)));
        return decimals >= 0 && decimals <= 15 ? Math.Round(v, decimals, MidpointRounding.AwayFromZero)
            : Math.Round(v / Math.Pow(10, -decimals), MidpointRounding.AwayFromZero) * Math.Pow(10, -decimals);
    }

    /// <summary>
    /// Peak memory of one case: on CPU the process's peak RSS (VmHWM, reset at the start when the kernel allows);
    /// on CUDA the device's peak used memory from NVML (device-wide: includes the CUDA context and any other process).
    /// </summary>
    public sealed class PeakMemory : IDisposable
    {
        readonly Nvml.PeakSampler? _sampler;
        readonly bool _reset;

        public PeakMemory(Device device)
        {
            if (device.type == DeviceType.CUDA)
            {
                if (Nvml.Available) _sampler = new Nvml.PeakSampler(Math.Max(0, (int)device.index));
                Kind = "gpu_used_peak_nvml";
            }
            else
            {
                _reset = ProcessMemory.ResetPeak();
                Kind = _reset ? "process_rss_peak" : "process_rss_peak_since_start";
            }
        }

        public string Kind { get; }

        /// <summary>Peak in MiB so far, or null when it cannot be measured.</summary>
        public long? PeakMiB
        {
            get
            {
                if (_sampler is not null) return _sampler.PeakBytes < 0 ? null : _sampler.PeakBytes >> 20;
                if (Kind == "gpu_used_peak_nvml") return null;
                return ProcessMemory.PeakResidentBytes() is long b ? b >> 20 : null;
            }
        }

        public void Dispose() => _sampler?.Dispose();
    }
}
