using System.CommandLine;
using System.Reflection;
using DreamBooth.Runtime;

namespace DreamBooth.Cli;

/// <summary>
/// One `dreambooth` sub-command. Implementations live in Commands/ (one file each) and are found by
/// reflection, so adding a command never edits a shared list.
/// </summary>
public interface ICliCommand
{
    Command Build();
}

/// <summary>The `dreambooth` root command, exit codes and error reporting.</summary>
public static class CliApp
{
    public const int Ok = 0;
    public const int InternalError = 1;
    public const int UserError = 2;
    public const int Cancelled = 130;

    /// <summary>Shown with every command: full stack traces on failure.</summary>
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Print stack traces and extra detail", Recursive = true };

    public static RootCommand BuildRoot()
    {
        var root = new RootCommand("DreamBooth Notebooks: prepare photos, fine-tune Stable Diffusion 1.x with the DreamBooth recipe, sample and compare checkpoints.");
        root.Options.Add(Verbose);
        foreach (var type in typeof(CliApp).Assembly.GetTypes()
                     .Where(t => typeof(ICliCommand).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
                     .OrderBy(t => t.Name, StringComparer.Ordinal))
        {
            var command = ((ICliCommand)Activator.CreateInstance(type)!).Build();
            root.Subcommands.Add(command);
        }
        return root;
    }

    public static Task<int> RunAsync(string[] args) => RunAsync(args, Console.Out, Console.Error);

    public static Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr) => RunAsync(args, stdout, stderr, CancellationToken.None);

    /// <summary>Runs a command; <paramref name="cancellation"/> acts as Ctrl+C does (for hosts and tests).</summary>
    public static async Task<int> RunAsync(string[] args, TextWriter stdout, TextWriter stderr, CancellationToken cancellation)
    {
        var root = BuildRoot();
        var parse = root.Parse(args);
        bool verbose = parse.GetValue(Verbose);
        if (parse.Errors.Count > 0 && !args.Any(a => a is "-h" or "--help" or "-?"))
        {
            foreach (var err in parse.Errors) stderr.WriteLine($"error: {err.Message}");
            stderr.WriteLine("(see 'dreambooth --help')");
            return UserError;
        }
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(cancellation);
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            if (cts.IsCancellationRequested) return; // a second Ctrl+C kills the process
            e.Cancel = true;
            stderr.WriteLine("cancelling: finishing the current step and saving...");
            cts.Cancel();
        };
        Console.CancelKeyPress += onCancel;
        try
        {
            var config = new InvocationConfiguration { EnableDefaultExceptionHandler = false, Output = stdout, Error = stderr };
            return await parse.InvokeAsync(config, cts.Token);
        }
        catch (Exception e)
        {
            return Report(e, verbose, stderr);
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>Maps an exception to an exit code with one line on stderr (the stack only with --verbose).</summary>
    public static int Report(Exception e, bool verbose, TextWriter stderr)
    {
        while (e is TargetInvocationException or AggregateException && e.InnerException is not null)
            e = e.InnerException!;
        switch (e)
        {
            case OperationCanceledException:
                stderr.WriteLine("cancelled");
                return Cancelled;
            case DreamBoothException or FileNotFoundException or DirectoryNotFoundException or InvalidDataException:
                stderr.WriteLine($"error: {OneLine(e.Message)}");
                if (verbose) stderr.WriteLine(e);
                return UserError;
            default:
                stderr.WriteLine($"internal error: {OneLine(e.GetType().Name + ": " + e.Message)}");
                stderr.WriteLine(verbose ? e.ToString() : "(run again with --verbose for the stack trace)");
                return InternalError;
        }
    }

    static string OneLine(string s) => s.ReplaceLineEndings(" ").Trim();

    /// <summary>Loads torch for commands that need it.</summary>
    public static TorchRuntimeInfo Torch() => TorchRuntime.Initialize();
}
