using System.CommandLine;

namespace DreamBooth.Cli.Commands;

/// <summary>
/// One `dreambooth bench` sub-command (bench prepare, train, sample, load...). Implementations live in
/// Commands/Bench/ (one file each) and are found by reflection, like <see cref="ICliCommand"/>.
/// </summary>
public interface IBenchSubcommand
{
    Command Build();
}

/// <summary>`dreambooth bench`: measurements that print one JSON line each, for docs/benchmarks.md.</summary>
public sealed class BenchCommand : ICliCommand
{
    public Command Build()
    {
        var cmd = new Command("bench", "Benchmarks; each prints one JSON line (throughput, peak memory) for docs/benchmarks.md");
        foreach (var type in typeof(BenchCommand).Assembly.GetTypes()
                     .Where(t => typeof(IBenchSubcommand).IsAssignableFrom(t) && t is { IsAbstract: false, IsInterface: false })
                     .OrderBy(t => t.Name, StringComparer.Ordinal))
            cmd.Subcommands.Add(((IBenchSubcommand)Activator.CreateInstance(type)!).Build());
        return cmd;
    }
}
