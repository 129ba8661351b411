using System.Diagnostics;
using System.Reflection;
using System.Text.Json;
using Xunit.Abstractions;
using Xunit.Sdk;

namespace DreamBooth.Tests.SelfHost;

/// <summary>
/// The test assembly's own entry point, so that a published copy runs its tests where there is no .NET SDK and so
/// no `dotnet test` (the GPU machine of tools/gpu/visit.sh): it discovers and runs the xunit tests of this assembly
/// through xunit's own execution engine, filtered by fully qualified name, and prints JSON lines (one per failed
/// test as it fails, then a summary; on SIGTERM, e.g. a timeout, the summary so far with <c>interrupted: true</c>). `dotnet test` does not use this entry point (it runs through the test platform's host).
/// <code>DreamBooth.Tests [--filter A|B] [--exclude C|D] [--list] [--json FILE]</code>
/// A test is selected when its "Namespace.Class.Method" contains one of the --filter parts (all, when none) and
/// none of the --exclude parts. Exit status: 0 all passed, 1 a test failed, 2 bad arguments or no test selected.
/// </summary>
public static class TestHostProgram
{
    public static int Main(string[] args)
    {
        try { return Run(Options.Parse(args), Console.Out); }
        catch (ArgumentException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
    }

    public sealed record Options(string[] Filters, string[] Excludes, bool List, string? JsonFile)
    {
        public static Options Parse(string[] args)
        {
            string[] filters = [], excludes = [];
            bool list = false;
            string? json = null;
            for (int i = 0; i < args.Length; i++)
            {
                string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]}: expected a value after it");
                switch (args[i])
                {
                    case "--filter": filters = Split(Next()); break;
                    case "--exclude": excludes = Split(Next()); break;
                    case "--list": list = true; break;
                    case "--json": json = Next(); break;
                    default: throw new ArgumentException($"unknown argument '{args[i]}' (expected --filter A|B, --exclude C|D, --list, --json FILE)");
                }
            }
            return new Options(filters, excludes, list, json);
        }

        static string[] Split(string v) => v.Split('|', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);

        public bool Selects(string fullyQualifiedName) =>
            (Filters.Length == 0 || Filters.Any(f => fullyQualifiedName.Contains(f, StringComparison.Ordinal)))
            && !Excludes.Any(x => fullyQualifiedName.Contains(x, StringComparison.Ordinal));
    }

    public static int Run(Options options, TextWriter output)
    {
        var assembly = typeof(TestHostProgram).Assembly;
        var sink = new Sink();
        using var framework = new XunitTestFramework(sink);
        using var discoverer = framework.GetDiscoverer(Reflector.Wrap(assembly));
        var discovery = new Sink();
        discoverer.Find(includeSourceInformation: false, discovery, new OptionBag());
        discovery.Finished.WaitOne();
        var selected = discovery.TestCases.Where(tc => options.Selects(Name(tc))).ToList();

        void Emit(object line)
        {
            string text = JsonSerializer.Serialize(line);
            output.WriteLine(text);
            if (options.JsonFile is not null) File.AppendAllText(options.JsonFile, text + Environment.NewLine);
        }

        if (options.List)
        {
            foreach (var name in selected.Select(Name).Distinct().Order(StringComparer.Ordinal)) output.WriteLine(name);
            return selected.Count == 0 ? 2 : 0;
        }
        if (selected.Count == 0)
        {
            Emit(new { step = "tests", error = "no test selected", filter = options.Filters, exclude = options.Excludes, discovered = discovery.TestCases.Count });
            return 2;
        }

        var clock = Stopwatch.StartNew();
        object Summary(bool interrupted) => new
        {
            step = "tests",
            selected = selected.Count,
            passed = sink.Passed, failed = sink.Failures.Count, skipped = sink.Skipped,
            interrupted,
            seconds = Math.Round(clock.Elapsed.TotalSeconds, 1),
            filter = options.Filters, exclude = options.Excludes,
            failures = sink.Failures.Select(f => f.Name).ToArray(),
        };
        // failures are printed as they happen; a SIGTERM (a step's timeout) still gets the counts so far
        sink.OnFailure = f => Emit(new { step = "test_failed", name = f.Name, message = f.Message });
        using var term = System.Runtime.InteropServices.PosixSignalRegistration.Create(System.Runtime.InteropServices.PosixSignal.SIGTERM, _ =>
        {
            lock (sink) Emit(Summary(interrupted: true));
        });
        Emit(new { step = "tests_started", selected = selected.Count });
        using var executor = framework.GetExecutor(assembly.GetName());
        executor.RunTests(selected, sink, new OptionBag());
        sink.Finished.WaitOne();
        lock (sink) Emit(Summary(interrupted: false));
        return sink.Failures.Count > 0 || sink.Passed + sink.Skipped == 0 ? 1 : 0;
    }

    static string Name(ITestCase tc) => $"{tc.TestMethod.TestClass.Class.Name}.{tc.TestMethod.Method.Name}";

    /// <summary>Collects discovery and execution messages; <see cref="Finished"/> is set at the end of either.</summary>
    sealed class Sink : LongLivedMarshalByRefObject, IMessageSink
    {
        public readonly List<ITestCase> TestCases = [];
        public readonly List<(string Name, string Message)> Failures = [];
        public int Passed, Skipped;
        public readonly ManualResetEvent Finished = new(false);
        public Action<(string Name, string Message)>? OnFailure;

        public bool OnMessage(IMessageSinkMessage message)
        {
            lock (this)
            {
                switch (message)
                {
                    case ITestCaseDiscoveryMessage d: TestCases.Add(d.TestCase); break;
                    case IDiscoveryCompleteMessage: Finished.Set(); break;
                    case ITestPassed: Passed++; break;
                    case ITestSkipped: Skipped++; break;
                    case ITestFailed f:
                        var failure = ($"{Name(f.TestCase)} ({f.Test.DisplayName})", string.Join(" | ", f.Messages.Select(m => m.ReplaceLineEndings(" "))));
                        Failures.Add(failure);
                        OnFailure?.Invoke(failure);
                        break;
                    case ITestAssemblyFinished: Finished.Set(); break;
                }
            }
            return true;
        }
    }

    /// <summary>Discovery and execution options: xunit's defaults (every value unset).</summary>
    sealed class OptionBag : ITestFrameworkDiscoveryOptions, ITestFrameworkExecutionOptions
    {
        readonly Dictionary<string, object?> _values = new(StringComparer.Ordinal);
        public TValue GetValue<TValue>(string name) => _values.TryGetValue(name, out var v) && v is TValue t ? t : default!;
        public void SetValue<TValue>(string name, TValue value) => _values[name] = value;
    }
}
