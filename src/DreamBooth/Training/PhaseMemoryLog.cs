using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using DreamBooth.Runtime;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Training;

/// <summary>
/// Peak memory per phase of a training run, one JSON line per phase (<c>dreambooth train --memory-log FILE</c>): the
/// process's peak resident memory since the previous line (VmHWM, reset after each line; Linux), its resident memory
/// at the end of the phase, and on CUDA the device's peak used memory (NVML, device-wide, sampled every 5 ms). The
/// caller marks load, setup and resume; <see cref="Observe"/> marks from the trainer's events: the first step,
/// each later step, each save. The data for docs/memory.md's per-phase figures.
/// </summary>
public sealed class PhaseMemoryLog : IDisposable
{
    readonly string _path;
    readonly int? _gpu;
    readonly Stopwatch _clock = Stopwatch.StartNew();
    Nvml.PeakSampler? _sampler;
    bool _stepped;
    double _last;

    /// <summary>Phase names as they appear in the log.</summary>
    public const string Load = "load", Setup = "setup", Resume = "resume", FirstStep = "first_step", Step = "step", Save = "save", End = "end";

    /// <summary>Starts a log at <paramref name="path"/> (appended to: a resumed run adds its lines after the killed run's).</summary>
    public PhaseMemoryLog(string path, Device? device = null)
    {
        _path = Path.GetFullPath(path);
        Directory.CreateDirectory(Path.GetDirectoryName(_path)!);
        if (device?.type == DeviceType.CUDA && Nvml.Available) _gpu = Math.Max(0, (int)device.index);
        Restart();
    }

    /// <summary>Whether the peak could be reset between phases (Linux 4.0+); otherwise each line's peak is the process's so far.</summary>
    public bool PeakResets { get; private set; }

    void Restart()
    {
        PeakResets = ProcessMemory.ResetPeak();
        _sampler?.Dispose();
        _sampler = _gpu is int i ? new Nvml.PeakSampler(i) : null;
    }

    /// <summary>Writes the line of the phase that just ended and starts the next one.</summary>
    public void Mark(string phase, int? step = null, int? epoch = null)
    {
        double now = _clock.Elapsed.TotalSeconds;
        var line = new Dictionary<string, object?>
        {
            ["phase"] = phase,
            ["step"] = step,
            ["epoch"] = epoch,
            ["seconds"] = Math.Round(now - _last, 3),
            ["peak_rss_bytes"] = ProcessMemory.PeakResidentBytes(),
            ["rss_bytes"] = ProcessMemory.ResidentBytes(),
            ["peak_since_last_line"] = PeakResets,
            ["device_peak_used_bytes"] = _sampler is { PeakBytes: >= 0 } s ? s.PeakBytes : null,
            ["pid"] = Environment.ProcessId,
            ["time"] = DateTime.UtcNow.ToString("O", CultureInfo.InvariantCulture),
        };
        File.AppendAllText(_path, JsonSerializer.Serialize(line) + "\n");
        _last = now;
        Restart();
    }

    /// <summary>Marks the phases the trainer's events end: the first step of this process, later steps, saves.</summary>
    public void Observe(TrainingEvent e)
    {
        switch (e.Kind)
        {
            case TrainingEventKind.Step:
                Mark(_stepped ? Step : FirstStep, e.Step, e.Epoch);
                _stepped = true;
                break;
            case TrainingEventKind.Saved:
                Mark(Save, e.Step, e.Epoch);
                break;
            case TrainingEventKind.Completed:
                Mark(End, e.Step, e.Epoch);
                break;
        }
    }

    /// <summary>An <see cref="IProgress{T}"/> that marks phases, then passes each event on to <paramref name="inner"/>.</summary>
    public IProgress<TrainingEvent> Wrap(IProgress<TrainingEvent>? inner) => new Forward(this, inner);

    sealed class Forward(PhaseMemoryLog log, IProgress<TrainingEvent>? inner) : IProgress<TrainingEvent>
    {
        public void Report(TrainingEvent value)
        {
            log.Observe(value);
            inner?.Report(value);
        }
    }

    public void Dispose() => _sampler?.Dispose();
}
