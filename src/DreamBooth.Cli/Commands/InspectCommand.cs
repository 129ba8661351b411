using System.CommandLine;
using DreamBooth.Checkpoints;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth inspect PATH`: format, components, tensor and parameter counts, dtypes, metadata, A1111 short hash.</summary>
public sealed class InspectCommand : ICliCommand
{
    public Command Build()
    {
        var path = new Argument<string>("path") { Description = "A .safetensors / .ckpt / .bin checkpoint, or a diffusers model folder" };
        var noHash = new Option<bool>("--no-hash") { Description = "Skip the SHA-256 of the file (slow for multi-GB files)" };
        var load = new Option<bool>("--load") { Description = "Also load the model strictly into the SD 1.x modules and report load time and peak memory" };
        var tokenizer = new Option<string?>("--tokenizer") { Description = "Tokenizer for --load of a single file: a tokenizer/ folder or bpe_simple_vocab_16e6.txt.gz (default: the Hub's openai/clip-vit-large-patch14)" };
        var cmd = new Command("inspect", "Describe a checkpoint: format, components, tensor and parameter counts, dtypes, metadata and A1111 short hash");
        cmd.Arguments.Add(path);
        cmd.Options.Add(noHash);
        cmd.Options.Add(load);
        cmd.Options.Add(tokenizer);
        cmd.SetAction(parse =>
        {
            CliApp.Torch();
            var w = parse.InvocationConfiguration.Output;
            var report = CheckpointInspector.Inspect(parse.GetValue(path)!, hash: !parse.GetValue(noHash));
            w.WriteLine($"path        {report.Path}");
            w.WriteLine($"format      {report.Format}");
            w.WriteLine($"layout      {report.Layout}");
            w.WriteLine($"size        {report.SizeBytes:N0} bytes");
            if (report.Sha256 is not null)
            {
                w.WriteLine($"sha256      {report.Sha256}");
                w.WriteLine($"short hash  {report.ShortHash}");
            }
            w.WriteLine($"tensors     {report.TensorCount:N0}");
            w.WriteLine($"parameters  {report.ParameterCount:N0}");
            w.WriteLine("components");
            foreach (var c in report.Components)
                w.WriteLine($"  {c.Name,-14} {c.TensorCount,6:N0} tensors {c.ParameterCount,15:N0} parameters  {string.Join(", ", c.DTypes.Select(d => $"{d.Key}×{d.Value}"))}");
            if (report.Metadata.Count > 0)
            {
                w.WriteLine("metadata");
                foreach (var (k, v) in report.Metadata.OrderBy(kv => kv.Key, StringComparer.Ordinal))
                    w.WriteLine($"  {k} = {(v.Length > 200 ? v[..200] + "…" : v).ReplaceLineEndings(" ")}");
            }
            if (parse.GetValue(load))
            {
                var sw = System.Diagnostics.Stopwatch.StartNew();
                using var model = StableDiffusionModel.Load(parse.GetValue(path)!, new ModelLoadOptions { TokenizerPath = parse.GetValue(tokenizer) });
                sw.Stop();
                using var self = System.Diagnostics.Process.GetCurrentProcess();
                self.Refresh();
                w.WriteLine($"loaded      {model.Name}: strict load OK in {sw.Elapsed.TotalSeconds:F2} s, peak working set {self.PeakWorkingSet64 / (1 << 20):N0} MiB");
            }
            return 0;
        });
        return cmd;
    }
}
