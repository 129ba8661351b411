using System.Diagnostics;
using System.Text.Json.Serialization;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// Times the phases of a step (forward, backward, optimizer, EMA) when <see cref="Enabled"/>: each phase starts after
/// a device synchronisation, <c>host_ms</c> is the wall time until the host has issued the phase's work, and
/// <c>done_ms</c> the wall time until the device has finished it (synchronise). host ≈ done means the phase is bound by
/// the host (dispatch, kernel launches, host reads); done ≫ host means the device's kernels are the cost. On a CPU
/// every op runs synchronously, so the two are equal. Disabled, it does nothing (the timed steps never synchronise).
/// </summary>
public sealed class PhaseTimer(Device device)
{
    public sealed record Phase(
        [property: JsonPropertyName("host_ms")] double HostMs,
        [property: JsonPropertyName("done_ms")] double DoneMs,
        [property: JsonPropertyName("steps")] int Steps);

    readonly Dictionary<string, (double Host, double Done, int Count)> _sums = new(StringComparer.Ordinal);
    string? _current;
    long _start;

    public bool Enabled { get; set; }

    /// <summary>Ends the running phase (if any) and starts <paramref name="name"/>.</summary>
    public void Begin(string name)
    {
        if (!Enabled) return;
        End();
        BenchSupport.Sync(device);
        _current = name;
        _start = Stopwatch.GetTimestamp();
    }

    /// <summary>Ends the running phase: host time now, done time after synchronising.</summary>
    public void End()
    {
        if (!Enabled || _current is null) return;
        double host = Stopwatch.GetElapsedTime(_start).TotalMilliseconds;
        BenchSupport.Sync(device);
        double done = Stopwatch.GetElapsedTime(_start).TotalMilliseconds;
        var (h, d, n) = _sums.GetValueOrDefault(_current);
        _sums[_current] = (h + host, d + done, n + 1);
        _current = null;
    }

    /// <summary>Mean per step of each phase, in the order first seen.</summary>
    public IReadOnlyDictionary<string, Phase> Averages() =>
        _sums.ToDictionary(kv => kv.Key, kv => new Phase(BenchSupport.Round(kv.Value.Host / kv.Value.Count, 3), BenchSupport.Round(kv.Value.Done / kv.Value.Count, 3), kv.Value.Count));
}
