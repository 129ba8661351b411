using System.Globalization;

namespace DreamBooth.Runtime;

/// <summary>
/// Resident memory of this process from <c>/proc/self/status</c> (Linux): <c>VmRSS</c> now and <c>VmHWM</c>,
/// the high-water mark, which counts native (libtorch) allocations that the .NET GC does not see.
/// Elsewhere the values are null.
/// </summary>
public static class ProcessMemory
{
    const string Status = "/proc/self/status";

    /// <summary>Peak resident set size in bytes (VmHWM), or null when unknown.</summary>
    public static long? PeakResidentBytes() => Read("VmHWM:");

    /// <summary>Current resident set size in bytes (VmRSS), or null when unknown.</summary>
    public static long? ResidentBytes() => Read("VmRSS:");

    /// <summary>
    /// Resets the peak (VmHWM) to the current RSS by writing 5 to <c>/proc/self/clear_refs</c> (Linux 4.0+), so
    /// one process can measure several cases one after another. False when the kernel refuses it.
    /// </summary>
    public static bool ResetPeak()
    {
        try
        {
            File.WriteAllText("/proc/self/clear_refs", "5");
            return true;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or NotSupportedException) { return false; }
    }

    static long? Read(string field)
    {
        try
        {
            foreach (var line in File.ReadLines(Status))
            {
                if (!line.StartsWith(field, StringComparison.Ordinal)) continue;
                var parts = line[field.Length..].Trim().Split(' ', StringSplitOptions.RemoveEmptyEntries);
                if (parts.Length == 2 && parts[1] == "kB" && long.TryParse(parts[0], NumberStyles.None, CultureInfo.InvariantCulture, out var kb))
                    return kb * 1024;
                return null;
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException) { }
        return null;
    }
}
