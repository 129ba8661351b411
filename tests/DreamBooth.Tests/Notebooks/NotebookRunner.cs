using Microsoft.DotNet.Interactive;
using Microsoft.DotNet.Interactive.Commands;
using Microsoft.DotNet.Interactive.CSharp;
using Microsoft.DotNet.Interactive.Documents;
using Microsoft.DotNet.Interactive.Documents.Jupyter;
using Microsoft.DotNet.Interactive.Events;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Notebooks;

/// <summary>One executed cell: its code, the formatted outputs it produced, and the error if it failed.</summary>
public sealed record CellResult(int Index, string Kernel, string Code, IReadOnlyList<(string MimeType, string Value)> Outputs, string? Error, TimeSpan Elapsed)
{
    /// <summary>Display events in order: "produced"/"updated"/"return" with their display id.</summary>
    public IReadOnlyList<(string Kind, string? DisplayId)> Displays { get; init; } = [];
}

/// <summary>
/// Runs a .dib notebook headless in-process (CompositeKernel + CSharpKernel, as dotnet-repl does),
/// cell by cell, collecting every display/return value, and writes the executed notebook as .ipynb
/// under artifacts/notebooks/ so a person can open it and see the outputs.
/// </summary>
public static class NotebookRunner
{
    public static async Task<IReadOnlyList<CellResult>> RunAsync(string dibPath, IReadOnlyDictionary<string, string>? environment = null, TimeSpan? cellTimeout = null)
    {
        var kernel = new CompositeKernel();
        var csharp = new CSharpKernel().UseKernelHelpers().UseValueSharing();
        kernel.Add(csharp, ["c#", "C#"]);
        kernel.DefaultKernelName = csharp.Name;
        kernel.UseImportMagicCommand();

        var kernelInfos = new KernelInfoCollection { new("csharp", languageName: "C#", aliases: ["c#", "C#"]), new("markdown", languageName: "Markdown", aliases: ["md"]) };
        var document = await InteractiveDocument.LoadAsync(new FileInfo(dibPath), kernelInfos);
        return await RunElementsAsync(kernel, document.Elements, dibPath, environment, cellTimeout);
    }

    /// <summary>Runs C# cells given as strings (a notebook written by a test), in the folder of <paramref name="pretendPath"/>.</summary>
    public static Task<IReadOnlyList<CellResult>> RunCodeAsync(string pretendPath, IEnumerable<string> cells, TimeSpan? cellTimeout = null)
    {
        var kernel = new CompositeKernel();
        var csharp = new CSharpKernel().UseKernelHelpers().UseValueSharing();
        kernel.Add(csharp, ["c#", "C#"]);
        kernel.DefaultKernelName = csharp.Name;
        kernel.UseImportMagicCommand();
        return RunElementsAsync(kernel, cells.Select(c => new InteractiveDocumentElement(c, "csharp")).ToList(), pretendPath, null, cellTimeout);
    }

    static async Task<IReadOnlyList<CellResult>> RunElementsAsync(CompositeKernel kernel, IEnumerable<InteractiveDocumentElement> elements, string dibPath,
        IReadOnlyDictionary<string, string>? environment, TimeSpan? cellTimeout)
    {
        var previousDir = Directory.GetCurrentDirectory();
        var previousEnv = new Dictionary<string, string?>();
        Directory.SetCurrentDirectory(Path.GetDirectoryName(Path.GetFullPath(dibPath))!);
        foreach (var (k, v) in environment ?? new Dictionary<string, string>())
        {
            previousEnv[k] = Environment.GetEnvironmentVariable(k);
            Environment.SetEnvironmentVariable(k, v);
        }
        var results = new List<CellResult>();
        var executed = new InteractiveDocument();
        try
        {
            int index = 0;
            foreach (var element in elements)
            {
                index++;
                if (element.KernelName is "markdown" or "md")
                {
                    executed.Add(new InteractiveDocumentElement(element.Contents, "markdown"));
                    continue;
                }
                var sw = System.Diagnostics.Stopwatch.StartNew();
                var run = kernel.SendAsync(new SubmitCode(element.Contents, element.KernelName ?? "csharp"));
                var finished = await Task.WhenAny(run, Task.Delay(cellTimeout ?? TimeSpan.FromMinutes(10)));
                if (finished != run) throw new TimeoutException($"{Path.GetFileName(dibPath)} cell {index} did not finish in time");
                var result = await run;
                var outputs = new List<(string, string)>();
                var docOutputs = new List<InteractiveDocumentOutputElement>();
                var displays = new List<(string, string?)>();
                var outputById = new Dictionary<string, int>();
                foreach (var e in result.Events)
                {
                    switch (e)
                    {
                        case ErrorProduced ep:
                            docOutputs.Add(new ErrorElement(ep.Message, "Error"));
                            break;
                        case DisplayEvent d:
                            foreach (var f in d.FormattedValues) outputs.Add((f.MimeType, f.Value));
                            displays.Add((d switch { DisplayedValueUpdated => "updated", ReturnValueProduced => "return", _ => "produced" }, d.ValueId));
                            var shown = new DisplayElement(d.FormattedValues.ToDictionary(f => f.MimeType, f => (object)f.Value));
                            // as a front end does: an update replaces the output it names
                            if (d is DisplayedValueUpdated && d.ValueId is { } id && outputById.TryGetValue(id, out var at)) docOutputs[at] = shown;
                            else
                            {
                                if (d.ValueId is { } newId) outputById[newId] = docOutputs.Count;
                                docOutputs.Add(shown);
                            }
                            break;
                    }
                }
                string? error = result.Events.OfType<CommandFailed>().FirstOrDefault() is { } failed
                    ? failed.Message + (failed.Exception is null ? "" : "\n" + failed.Exception)
                    : null;
                if (error is not null) docOutputs.Add(new ErrorElement(error, "CommandFailed"));
                executed.Add(new InteractiveDocumentElement(element.Contents, element.KernelName ?? "csharp", docOutputs.ToArray()));
                results.Add(new CellResult(index, element.KernelName ?? "csharp", element.Contents, outputs, error, sw.Elapsed) { Displays = displays });
                if (error is not null) break;
            }
        }
        finally
        {
            Directory.SetCurrentDirectory(previousDir);
            foreach (var (k, v) in previousEnv) Environment.SetEnvironmentVariable(k, v);
            var outDir = Path.Combine(TestPaths.RepoRoot, "artifacts", "notebooks");
            Directory.CreateDirectory(outDir);
            var ipynb = Path.Combine(outDir, Path.GetFileNameWithoutExtension(dibPath) + ".ipynb");
            executed.Add(new InteractiveDocumentElement($"// executed headless by the test suite at {DateTime.UtcNow:u}", "csharp"));
            File.WriteAllText(ipynb, executed.ToJupyterJson("csharp"));
            kernel.Dispose();
        }
        return results;
    }
}
