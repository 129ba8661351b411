using System.Diagnostics;
using System.Text;

namespace DreamBooth.Tests.Reliability.Fuzz;

/// <summary>A parser under test: valid seed files, the mutations that apply to them, and the call that parses bytes.</summary>
public sealed record FuzzTarget(
    string Name,
    Func<IReadOnlyList<byte[]>> Seeds,
    IReadOnlyList<(string Name, Mutation Apply)> Mutations,
    Action<byte[]> Parse,
    double Weight = 1.0)
{
    /// <summary>Managed bytes one case may allocate: a fixed allowance plus a multiple of the input size.</summary>
    public long AllocationAllowance { get; init; } = 64L << 20;
    public long AllocationPerInputByte { get; init; } = 64;
    public override string ToString() => Name;
}

public sealed record FuzzFailure(string Target, int Case, string Mutations, string Problem, int InputLength);

public sealed record FuzzResult(string Target, int Cases, int Accepted, int Rejected, long MaxAllocatedBytes, TimeSpan MaxCaseTime,
    TimeSpan Elapsed, IReadOnlyDictionary<string, int> ErrorTypes, IReadOnlyList<FuzzFailure> Failures, int FailureCount)
{
    public string Summary =>
        $"{Target}: {Cases} cases in {Elapsed.TotalSeconds:F1}s ({Accepted} still valid, {Rejected} rejected cleanly, " +
        $"{FailureCount} failures), max {MaxAllocatedBytes / 1024} KiB managed and {MaxCaseTime.TotalMilliseconds:F0} ms per case";
}

/// <summary>
/// Runs seeded mutations of valid files through a parser. A case passes when the parser returns or throws
/// <see cref="DreamBoothException"/>/<see cref="InvalidDataException"/> with a one-line message; it fails on
/// any other exception type, on more managed allocation than the target's allowance, or on running past the
/// per-case timeout (a watchdog on the calling thread; the parser runs on its own thread).
/// </summary>
public static class FuzzHarness
{
    /// <summary>Default case total for CI; <c>DREAMBOOTH_FUZZ_CASES</c> overrides it (the soak uses 100000).</summary>
    public const int DefaultTotalCases = 12_000;

    public static int TotalCases =>
        int.TryParse(Environment.GetEnvironmentVariable("DREAMBOOTH_FUZZ_CASES"), out int n) && n > 0 ? n : DefaultTotalCases;

    public static int BaseSeed =>
        int.TryParse(Environment.GetEnvironmentVariable("DREAMBOOTH_FUZZ_SEED"), out int n) ? n : 20261124;

    public static bool IsCleanError(Exception e) => e is DreamBoothException or InvalidDataException;

    /// <summary>Stable per-(target, case) seed so a failure is reproducible from the report alone.</summary>
    public static int CaseSeed(string target, int index, int baseSeed)
    {
        uint h = 2166136261;
        foreach (char c in target) h = (h ^ c) * 16777619;
        return unchecked((int)(h ^ (uint)baseSeed * 2654435761u ^ (uint)index * 40503u));
    }

    /// <summary>Builds case <paramref name="index"/>'s input: a seed file with 1-3 stacked mutations.</summary>
    public static (byte[] Input, string Mutations) MakeCase(FuzzTarget target, IReadOnlyList<byte[]> seeds, int index, int baseSeed)
    {
        var rng = new Random(CaseSeed(target.Name, index, baseSeed));
        var input = seeds[rng.Next(seeds.Count)];
        int stack = 1 + (rng.Next(4) == 0 ? rng.Next(3) : 0);
        var names = new List<string>();
        for (int i = 0; i < stack; i++)
        {
            var (name, apply) = target.Mutations[rng.Next(target.Mutations.Count)];
            input = apply(input, rng);
            names.Add(name);
        }
        return (input, string.Join("+", names));
    }

    public static FuzzResult Run(FuzzTarget target, int cases, int baseSeed, TimeSpan perCaseTimeout)
    {
        var seeds = target.Seeds();
        // every seed must parse: otherwise the mutations start from a file that was already rejected
        foreach (var s in seeds) target.Parse(s);

        var failures = new List<FuzzFailure>();
        var errorTypes = new Dictionary<string, int>();
        int accepted = 0, rejected = 0, failureCount = 0;
        long maxAlloc = 0;
        long maxTicks = 0;
        long caseStart = 0;
        int current = -1;
        string currentMutations = "";
        int currentLength = 0;
        bool done = false;
        Exception? harnessError = null;

        var worker = new Thread(() =>
        {
            try
            {
                for (int i = 0; i < cases; i++)
                {
                    var (input, mutations) = MakeCase(target, seeds, i, baseSeed);
                    Volatile.Write(ref currentMutations, mutations);
                    Volatile.Write(ref currentLength, input.Length);
                    Volatile.Write(ref current, i);
                    long before = GC.GetAllocatedBytesForCurrentThread();
                    Volatile.Write(ref caseStart, Stopwatch.GetTimestamp());
                    Exception? error = null;
                    try { target.Parse(input); }
                    catch (Exception e) { error = e; }
                    long ticks = Stopwatch.GetTimestamp() - Volatile.Read(ref caseStart);
                    long allocated = GC.GetAllocatedBytesForCurrentThread() - before;
                    maxAlloc = Math.Max(maxAlloc, allocated);
                    maxTicks = Math.Max(maxTicks, ticks);

                    string? problem = null;
                    if (error is null) accepted++;
                    else if (IsCleanError(error))
                    {
                        rejected++;
                        string key = error.GetType().Name;
                        errorTypes[key] = errorTypes.GetValueOrDefault(key) + 1;
                        if (string.IsNullOrWhiteSpace(error.Message)) problem = $"{key} with an empty message";
                    }
                    else problem = $"{error.GetType().FullName}: {error.Message.ReplaceLineEndings(" ")} at {FirstFrame(error)}";

                    long allowance = target.AllocationAllowance + target.AllocationPerInputByte * input.Length;
                    if (allocated > allowance)
                        problem = (problem is null ? "" : problem + "; ") + $"allocated {allocated:N0} managed bytes (allowance {allowance:N0})";
                    if (problem is not null)
                    {
                        failureCount++;
                        if (failures.Count < 20) failures.Add(new FuzzFailure(target.Name, i, mutations, problem, input.Length));
                    }
                }
            }
            catch (Exception e) { harnessError = e; }
            finally { Volatile.Write(ref done, true); }
        }, maxStackSize: 16 << 20) { IsBackground = true, Name = "fuzz " + target.Name };

        var sw = Stopwatch.StartNew();
        worker.Start();
        while (!worker.Join(100))
        {
            long start = Volatile.Read(ref caseStart);
            if (start != 0 && Stopwatch.GetElapsedTime(start) > perCaseTimeout && !Volatile.Read(ref done))
            {
                // the parser hangs: report the case; the background thread is abandoned
                return new FuzzResult(target.Name, Volatile.Read(ref current) + 1, accepted, rejected, maxAlloc, Stopwatch.GetElapsedTime(start), sw.Elapsed,
                    errorTypes, [.. failures, new FuzzFailure(target.Name, Volatile.Read(ref current), Volatile.Read(ref currentMutations),
                        $"no result after {perCaseTimeout.TotalSeconds:F0}s (hang)", Volatile.Read(ref currentLength))], failureCount + 1);
            }
        }
        if (harnessError is not null) throw new InvalidOperationException("fuzz harness failed", harnessError);
        return new FuzzResult(target.Name, cases, accepted, rejected, maxAlloc, TimeSpan.FromSeconds(maxTicks / (double)Stopwatch.Frequency),
            sw.Elapsed, errorTypes, failures, failureCount);
    }

    static string FirstFrame(Exception e)
    {
        var line = e.StackTrace?.Split('\n').FirstOrDefault(l => l.Contains("DreamBooth")) ?? e.StackTrace?.Split('\n').FirstOrDefault() ?? "?";
        return line.Trim();
    }

    public static string Describe(FuzzResult r)
    {
        var sb = new StringBuilder(r.Summary);
        foreach (var f in r.Failures.Take(10))
            sb.Append($"\n  case {f.Case} [{f.Mutations}, {f.InputLength} bytes]: {f.Problem}");
        return sb.ToString();
    }
}
