namespace DreamBooth.Tests.Reliability;

/// <summary>
/// Appends the figures of the last reliability run (cases fuzzed, kills survived, bytes lost) to
/// $DREAMBOOTH_RELIABILITY_FIGURES when set, so docs/reliability.md can quote a real run.
/// </summary>
public static class ReliabilityFigures
{
    static readonly object Gate = new();

    public static void Record(string area, string line)
    {
        var path = Environment.GetEnvironmentVariable("DREAMBOOTH_RELIABILITY_FIGURES");
        if (string.IsNullOrEmpty(path)) return;
        lock (Gate) File.AppendAllText(path, $"{DateTime.UtcNow:O}\t{area}\t{line}\n");
    }
}
