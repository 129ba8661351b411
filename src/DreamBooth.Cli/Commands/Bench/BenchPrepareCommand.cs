using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using DreamBooth.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Jpeg;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>`dreambooth bench prepare`: generated 12-MP JPEGs through the whole preparation; images/s and peak memory.</summary>
public sealed class BenchPrepareCommand : IBenchSubcommand
{
    public Command Build()
    {
        var count = new Option<int>("--images") { Description = "Number of generated JPEGs", DefaultValueFactory = _ => 8 };
        var mp = new Option<double>("--megapixels") { Description = "Size of each generated JPEG in megapixels (4:3)", DefaultValueFactory = _ => 12 };
        var size = new Option<string>("--size") { Description = "Target size", DefaultValueFactory = _ => "768x1024" };
        var jobs = new Option<int>("--jobs") { Description = "Images processed in parallel", DefaultValueFactory = _ => Environment.ProcessorCount };
        var cmd = new Command("prepare", "Generate 12-MP JPEGs in a temp folder, prepare them, print images/s and peak memory as JSON");
        cmd.Options.Add(count); cmd.Options.Add(mp); cmd.Options.Add(size); cmd.Options.Add(jobs);
        cmd.SetAction(async (parse, ct) =>
        {
            int n = parse.GetValue(count);
            double megapixels = parse.GetValue(mp);
            if (n <= 0 || megapixels <= 0) throw new DreamBoothException("--images and --megapixels must be positive");
            if (megapixels > IngestOptions.Default.MaxMegapixels)
                throw new DreamBoothException($"--megapixels {megapixels}: expected at most {IngestOptions.Default.MaxMegapixels} (larger photos are skipped by prepare's decompression-bomb guard)");
            var target = Bucket.Parse(parse.GetValue(size)!, "--size");   // checked before any photo is generated
            var dir = Path.Combine(Path.GetTempPath(), $"dreambooth-bench-prepare-{Guid.NewGuid():N}");
            var raw = Path.Combine(dir, "raw");
            Directory.CreateDirectory(raw);
            try
            {
                int h = (int)Math.Round(Math.Sqrt(megapixels * 1e6 * 3 / 4)), w = h * 4 / 3;
                for (int i = 0; i < n; i++) Generate(Path.Combine(raw, $"img{i:D3}.jpg"), w, h, seed: i);
                GC.Collect();
                using var proc = Process.GetCurrentProcess();
                var cpu0 = proc.TotalProcessorTime;
                var sw = Stopwatch.StartNew();
                var report = await DatasetPreparer.RunAsync(raw, Path.Combine(dir, "out"),
                    new PrepareOptions { Size = target, MaxParallelism = parse.GetValue(jobs), Force = true }, null, ct);
                sw.Stop();
                proc.Refresh();
                double cpu = (proc.TotalProcessorTime - cpu0).TotalSeconds;
                var line = JsonSerializer.Serialize(new
                {
                    bench = "prepare", images = n, width = w, height = h, megapixels = Math.Round(w * (double)h / 1e6, 1),
                    size = parse.GetValue(size), jobs = parse.GetValue(jobs), prepared = report.Prepared,
                    seconds = Math.Round(sw.Elapsed.TotalSeconds, 2), images_per_s = Math.Round(n / sw.Elapsed.TotalSeconds, 2),
                    cpu_seconds = Math.Round(cpu, 2), images_per_cpu_s = Math.Round(n / cpu, 3), load_average = LoadAverage(),
                    peak_working_set_mib = proc.PeakWorkingSet64 >> 20, cores = Environment.ProcessorCount,
                });
                parse.InvocationConfiguration.Output.WriteLine(line);
                return report.Prepared == n ? 0 : 1;
            }
            finally
            {
                try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
            }
        });
        return cmd;
    }

    /// <summary>The 1-minute load average (Linux), so that a figure taken on a busy machine says so; null elsewhere.</summary>
    static double? LoadAverage()
    {
        try
        {
            var first = File.ReadAllText("/proc/loadavg").Split(' ')[0];
            return double.Parse(first, System.Globalization.CultureInfo.InvariantCulture);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or FormatException) { return null; }
    }

    /// <summary>A photo-like JPEG: smooth gradients plus noise so the encoder and decoder do real work.</summary>
    static void Generate(string path, int w, int h, int seed)
    {
        using var img = new Image<Rgb24>(w, h);
        var rng = new Random(seed);
        img.ProcessPixelRows(acc =>
        {
            for (int y = 0; y < acc.Height; y++)
            {
                var row = acc.GetRowSpan(y);
                for (int x = 0; x < row.Length; x++)
                {
                    int n = rng.Next(24);
                    row[x] = new Rgb24((byte)(x * 200 / w + n), (byte)(y * 200 / h + n), (byte)((x + y) * 100 / (w + h) + 60 + n));
                }
            }
        });
        img.SaveAsJpeg(path, new JpegEncoder { Quality = 90 });
    }
}
