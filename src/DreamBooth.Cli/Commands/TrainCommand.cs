using System.CommandLine;
using System.Globalization;
using DreamBooth.Checkpoints;
using DreamBooth.Training;

namespace DreamBooth.Cli.Commands;

/// <summary>
/// `dreambooth train --config FILE [--resume OUTPUT_DIR]`, and `--import-a1111 db_config.json` to turn an
/// A1111 extension config into ours (written to --config) without training.
/// </summary>
public sealed class TrainCommand : ICliCommand
{
    public Command Build()
    {
        var config = new Option<FileInfo?>("--config") { Description = "Training config JSON (snake_case keys; see docs). With --import-a1111: where to write it" };
        var resume = new Option<DirectoryInfo?>("--resume")
        {
            Description = "Continue the run saved in this output folder. On the CPU the result is bitwise equal to an uninterrupted run " +
                          "when both use the same number of torch threads: resume uses the count the run started with (see --threads)",
        };
        var threads = new Option<int?>("--threads")
        {
            Description = "torch CPU threads (default: one per core; with --resume: the count the run started with). Sums split across " +
                          "threads add up in another order with another count, so a run resumed with a different count differs in the last bits",
        };
        var import = new Option<FileInfo?>("--import-a1111") { Description = "Convert an A1111 DreamBooth extension db_config.json into --config, report what is ignored, and exit" };
        var every = new Option<int>("--log-every") { Description = "Print a step line every N steps", DefaultValueFactory = _ => 10 };
        var memoryLog = new Option<FileInfo?>("--memory-log") { Description = "Append one JSON line per phase (load, setup, resume, first step, each step, each save) with the process's peak resident memory (and the GPU's peak used memory on CUDA) to this file; docs/memory.md" };
        var force = new Option<bool>("--force") { Description = "With --import-a1111: replace an existing --config file" };
        var cmd = new Command("train", "Fine-tune a Stable Diffusion 1.x model with DreamBooth (prior preservation, fp32 master weights, EMA, resumable). " +
            "Before step 1 it prints what the run will write (fp16 checkpoints, all kept; the newest training state; latent cache; class images) " +
            "against the free disk space, and stops with exit 2 if it cannot fit; missing class images are generated at the photos' bucket size");
        cmd.Options.Add(config);
        cmd.Options.Add(resume);
        cmd.Options.Add(import);
        cmd.Options.Add(every);
        cmd.Options.Add(memoryLog);
        cmd.Options.Add(force);
        cmd.Options.Add(threads);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            var configFile = parse.GetValue(config);
            var resumeDir = parse.GetValue(resume);
            var importFile = parse.GetValue(import);
            if (importFile is not null)
            {
                if (configFile is null) throw new DreamBoothException("--import-a1111 needs --config FILE to write the converted config to");
                IO.OutputPath.CheckFile(configFile.FullName, "--config");
                if (configFile.Exists && !parse.GetValue(force))
                    throw new DreamBoothException($"--config '{configFile.FullName}' already exists: --import-a1111 would replace it; pass --force to overwrite it, or name a new file");
                var r = A1111DbConfigImporter.ImportFile(importFile.FullName);
                r.Config.Save(configFile.FullName);
                foreach (var m in r.Mapped) w.WriteLine($"mapped   {m}");
                foreach (var i in r.Ignored) w.WriteLine($"ignored  {i}");
                w.WriteLine($"wrote {configFile.FullName}");
                return 0;
            }
            TrainingConfig cfg;
            if (resumeDir is not null) cfg = DreamBoothTrainer.ReadResumeConfig(resumeDir.FullName);
            else if (configFile is not null) cfg = TrainingConfig.Load(configFile.FullName);
            else throw new DreamBoothException("train needs --config FILE (or --resume OUTPUT_DIR)");
            cfg.ThrowIfInvalid(source: configFile?.FullName ?? resumeDir!.FullName);
            int? threadCount = parse.GetValue(threads);
            if (threadCount is < 1) throw new DreamBoothException($"--threads {threadCount}: expected at least 1");

            CliApp.Torch();
            using var memory = parse.GetValue(memoryLog) is { } logFile ? new PhaseMemoryLog(logFile.FullName, DreamBoothTrainer.ResolveDevice(cfg.Device)) : null;
            if (resumeDir is not null && DreamBoothTrainer.ReadResumeThreads(resumeDir.FullName) is int started)
            {
                if (threadCount is null) threadCount = started;
                else if (threadCount != started)
                    parse.InvocationConfiguration.Error.WriteLine($"note: the run started with {started} torch thread(s); resuming with {threadCount} gives weights that differ from an uninterrupted run in the last bits");
            }
            // libtorch keeps the thread count per OS thread: it is set inside each Task.Run, on the thread doing the work
            if (resumeDir is not null) w.WriteLine($"resuming with {threadCount?.ToString(System.Globalization.CultureInfo.InvariantCulture) ?? "the default number of"} torch thread(s)");
            using var model = StableDiffusionModel.Load(cfg.PretrainedModel);
            memory?.Mark(PhaseMemoryLog.Load);
            int n = Math.Max(1, parse.GetValue(every));
            var progress = new SyncProgress<TrainingEvent>(e => Print(w, e, n));
            // missing class images are generated here (library side), previews use Txt2ImgPreviewRenderer.For(cfg)
            using var trainer = await Task.Run(() =>
            {
                using var _ = Runtime.TorchThreads.Use(threadCount);
                var t = new DreamBoothTrainer(cfg, model, setupProgress: progress, setupCancellation: ct);
                memory?.Mark(PhaseMemoryLog.Setup);
                if (resumeDir is not null)
                {
                    t.LoadState(resumeDir.FullName);
                    memory?.Mark(PhaseMemoryLog.Resume);
                }
                return t;
            }, CancellationToken.None);
            var result = await Task.Run(() =>
            {
                using var _ = Runtime.TorchThreads.Use(threadCount);
                return trainer.Run(memory?.Wrap(progress) ?? progress, ct);
            }, CancellationToken.None);
            w.WriteLine(result.Cancelled
                ? $"cancelled at step {result.Steps}; resume with: dreambooth train --resume {cfg.OutputDir}"
                : $"done: {result.Steps} steps, {result.Epochs} epochs, {result.Saves.Count} save(s) in {cfg.OutputDir}");
            return 0;
        });
        return cmd;
    }

    static void Print(TextWriter w, TrainingEvent e, int every)
    {
        var ci = CultureInfo.InvariantCulture;
        switch (e.Kind)
        {
            case TrainingEventKind.Step when e.Step % every == 0 || e.Step == e.TotalSteps:
                // with alternate prior stepping a step is an instance step or a class step: the other part prints as "-"
                static string Part(double v) => double.IsNaN(v) ? "-" : v.ToString("F4", CultureInfo.InvariantCulture);
                w.WriteLine(string.Format(ci, "step {0}/{1} epoch {2} loss {3:F4} inst {4} prior {5} lr {6:G3}/{7:G3} gnorm {8:F3} {9:F2} img/s {10} MiB",
                    e.Step, e.TotalSteps, e.Epoch + 1, e.Loss, Part(e.InstanceLoss), Part(e.PriorLoss), e.LrUnet, e.LrTextEncoder, e.GradNorm, e.ImagesPerSecond, e.MemoryBytes >> 20));
                break;
            case TrainingEventKind.Step:
                break;
            case TrainingEventKind.Saved:
                w.WriteLine($"saved {e.Path}");
                break;
            default:
                if (e.Message is not null) w.WriteLine(e.Message);
                break;
        }
    }

    /// <summary>IProgress that reports on the training thread (in order, no sync-context hop).</summary>
}
