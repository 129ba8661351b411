using System.CommandLine;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Nodes;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Training;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using static TorchSharp.torch;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// `dreambooth bench recipe-run`: the recipe end to end on the full SD 1.5 architecture with random weights, at a tiny
/// image size. It writes a random-weight fp32 single file (4.3 GB, as Realistic Vision 2.0 ships), two 64×64 instance
/// images and two class images, and a config that is the recipe's defaults except the image size, the counts and
/// epochs (UNet + text encoder, EMA, Lion, bf16, gradient checkpointing, cached latents, alternate prior steps, fp16
/// saves, one training state kept). Then, each `dreambooth train` in a child process loading that file through the real
/// loader, with `--memory-log`:
/// <list type="number">
/// <item>the reference: every epoch straight through;</item>
/// <item>the same config in another folder, SIGKILLed mid-step after its first save, then `train --resume`d to the end.</item>
/// </list>
/// Checks: the final checkpoint holds exactly the A1111 key set (<see cref="SingleFileCheckpoint.LdmShapes"/>, and the
/// list in <c>--expected-keys</c> when given: e.g. one written by diffusers' converter) with every shape; every float
/// tensor is fp16 and the file is the fp16 size; one training state remains in each folder; the interrupted + resumed
/// run's final checkpoint and final training state are byte-identical to the reference's. Prints one JSON line per run
/// and phase (peak resident memory, seconds) and one with the checks; exit 1 when a check fails.
/// </summary>
public sealed class BenchRecipeRunCommand : IBenchSubcommand
{
    public Command Build()
    {
        var dir = new Option<string>("--dir") { Description = "Folder to work in (needs ~35 GB free at full size: model 4.3 GB, fp16 saves, 11.3 GB training states); a fresh recipe-run/ folder is made in it", Required = true };
        var tiny = new Option<bool>("--tiny") { Description = "Tiny configs of the same architectures instead of full-size SD1.5 (the CI run)" };
        var epochs = new Option<int>("--epochs") { Description = "Epochs (2 photos, 2 steps each with alternate prior steps; a save every epoch); the kill lands in the epoch after the first save", DefaultValueFactory = _ => 2 };
        var device = new Option<string>("--device") { Description = "The config's device: auto, cpu, cuda, cuda:N", DefaultValueFactory = _ => "auto" };
        var expected = new Option<string?>("--expected-keys") { Description = "A JSON key list to check the checkpoint against as well: {\"original\": {key: shape}} (diffusers' converter, tests/fixtures/parity/sd15-keys.json), {key: shape} or [key]" };
        var keep = new Option<bool>("--keep") { Description = "Keep recipe-run/ (model, saves, states, logs) instead of deleting it" };
        var cmd = new Command("recipe-run", "The recipe on full-size SD1.5 (random weights, 64x64 images): train, save, SIGKILL, resume; checks the A1111 key set, " +
            "fp16 size, one state kept and bitwise resume; peak memory per phase (JSON lines)");
        foreach (var o in new Option[] { dir, tiny, epochs, device, expected, keep }) cmd.Options.Add(o);
        cmd.SetAction(async (parse, ct) =>
        {
            var w = parse.InvocationConfiguration.Output;
            int epochCount = parse.GetValue(epochs);
            if (epochCount < 2) throw new DreamBoothException("--epochs: expected at least 2 (the kill lands after the first save)");
            var expectedKeys = parse.GetValue(expected) is { } e ? ReadKeyList(e) : null;
            var root = Path.Combine(Path.GetFullPath(parse.GetValue(dir)!), "recipe-run");
            if (Directory.Exists(root) || File.Exists(root)) throw new DreamBoothException($"--dir: {root} already exists (remove it, or name another folder)");
            Directory.CreateDirectory(root);
            bool passed;
            try
            {
                passed = await Run(w, root, parse.GetValue(tiny), epochCount, parse.GetValue(device)!, expectedKeys, ct);
            }
            finally
            {
                if (!parse.GetValue(keep)) Directory.Delete(root, recursive: true);
            }
            return passed ? CliApp.Ok : CliApp.InternalError;
        });
        return cmd;
    }

    public sealed record Configs(CLIPTextConfig Text, UNet2DConditionConfig UNet, AutoencoderKLConfig Vae, string Model);

    public static Configs ConfigsFor(bool tiny) => tiny
        ? new(CLIPTextConfig.Tiny, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, "tiny-random")
        : new(CLIPTextConfig.StableDiffusion15, UNet2DConditionConfig.StableDiffusion15, AutoencoderKLConfig.StableDiffusion15, "sd15-random");

    /// <summary>The recipe's config (TrainingConfig's defaults) with only what a 64×64 proof run must change.</summary>
    public static TrainingConfig RecipeConfig(string model, string instanceDir, string classDir, string outputDir, int epochs, string device) => new()
    {
        PretrainedModel = model,
        OutputDir = outputDir,
        Name = "recipe",
        Concepts = [new ConceptConfig { InstanceDir = instanceDir, ClassDir = classDir, ClassImagesPerInstance = 1 }],
        Epochs = epochs,
        SaveEveryEpochs = 1,
        MaxResolution = 64,
        Device = device,
    };

    static async Task<bool> Run(TextWriter w, string root, bool tiny, int epochs, string device, IReadOnlyDictionary<string, long[]?>? expectedKeys, CancellationToken ct)
    {
        var configs = ConfigsFor(tiny);
        var clock = Stopwatch.StartNew();
        // the model: random weights written as an fp32 A1111 single file, with the tokenizer (and, for the tiny
        // architecture, the configs) beside it, so `train` loads it by path through the real loader
        string modelDir = Directory.CreateDirectory(Path.Combine(root, "model")).FullName;
        string modelFile = Path.Combine(modelDir, $"{configs.Model}.safetensors");
        CliApp.Torch();
        ModelFootprint footprint;
        using (var sd = StableDiffusionModel.CreateRandom(configs.Text, configs.UNet, configs.Vae, BenchSupport.ByteTokenizer(), seed: 1))
        {
            footprint = ModelFootprint.Of(sd);
            sd.SaveSingleFile(modelFile, ScalarType.Float32);
            sd.WriteSidecar(modelDir);
        }
        GC.Collect();
        w.WriteLine(BenchSupport.Json(new { bench = "recipe-run", phase = "write_model", model = configs.Model, file_bytes = new FileInfo(modelFile).Length, seconds = BenchSupport.Round(clock.Elapsed.TotalSeconds, 1) }));

        string instance = Directory.CreateDirectory(Path.Combine(root, "instance")).FullName;
        string classes = Directory.CreateDirectory(Path.Combine(root, "class")).FullName;
        for (int i = 0; i < 2; i++)
        {
            WriteImage(Path.Combine(instance, $"photo{i}.png"), i);
            WriteImage(Path.Combine(classes, $"man{i}.png"), 100 + i);
        }
        string Config(string name)
        {
            var path = Path.Combine(root, name + ".json");
            RecipeConfig(modelFile, instance, classes, Path.Combine(root, name), epochs, device).Save(path);
            return path;
        }
        int stepsPerEpoch = 4;   // 2 photos, each followed by a class step (alternate prior stepping, batch 1)
        int totalSteps = epochs * stepsPerEpoch;

        // 1. the reference, straight through
        var reference = await RunTrain(root, "reference", ["train", "--config", Config("reference"), "--log-every", "1"], killAfterStep: null, ct);
        var refOut = Path.Combine(root, "reference");
        var refFinal = Path.Combine(refOut, $"recipe_{epochs:0000}.safetensors");
        var refCheckpointHash = TensorDataSha256(refFinal);
        var refStates = Directory.GetFiles(refOut, "*.state");
        var refStateHash = refStates.Length == 1 ? Sha256(refStates[0]) : null;
        var refSaves = Directory.GetFiles(refOut, "recipe_*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList();
        long refFinalBytes = new FileInfo(refFinal).Length;
        // disk: the reference's saves and state are known by their hashes now; the next run needs the room
        foreach (var f in Directory.GetFiles(refOut, "*.state").Concat(Directory.GetFiles(refOut, "recipe_*.safetensors")).Where(f => f != refFinal)) File.Delete(f);

        // 2. the same run, SIGKILLed in the step after its first save's, then resumed
        var killedOut = Path.Combine(root, "interrupted");
        var killed = await RunTrain(root, "interrupted", ["train", "--config", Config("interrupted"), "--log-every", "1"], killAfterStep: stepsPerEpoch + 1, ct);
        var statesAfterKill = Directory.GetFiles(killedOut, "*.state").Select(Path.GetFileName).ToList();
        var pointer = JsonNode.Parse(File.ReadAllText(Path.Combine(killedOut, DreamBoothTrainer.StateFileName)))!;
        var resumed = await RunTrain(root, "interrupted", ["train", "--resume", killedOut, "--log-every", "1"], killAfterStep: null, ct);
        var final = Path.Combine(killedOut, $"recipe_{epochs:0000}.safetensors");
        var states = Directory.GetFiles(killedOut, "*.state");

        foreach (var memoryLog in new[] { reference.MemoryLog, resumed.MemoryLog })
            foreach (var line in PhaseSummary(memoryLog, configs.Model)) w.WriteLine(BenchSupport.Json(line));

        // checks
        var checks = new Dictionary<string, object?>();
        var ours = SingleFileCheckpoint.LdmShapes(configs.Text, configs.UNet, configs.Vae);
        using var file = SafeTensors.Open(final);
        var (missing, unexpected, misshaped) = CompareKeys(file, ours.ToDictionary(kv => kv.Key, kv => (long[]?)kv.Value.Shape));
        checks["a1111_keys"] = new { expected = ours.Count, found = file.Tensors.Count, missing, unexpected, misshaped, ok = missing.Count + unexpected.Count + misshaped.Count == 0 };
        if (expectedKeys is not null)
        {
            // an independent list (e.g. diffusers' converter, which leaves position_ids out): every key of it, and nothing else but position_ids
            var (m2, u2, s2) = CompareKeys(file, expectedKeys, allowExtra: [LdmKeyMap.TextPositionIds]);
            checks["expected_keys"] = new { expected = expectedKeys.Count, missing = m2, unexpected = u2, misshaped = s2, ok = m2.Count + u2.Count + s2.Count == 0 };
        }
        long floatElements = ours.Values.Where(v => v.IsFloat).Sum(v => v.Shape.Aggregate(1L, (a, b) => a * b));
        long otherBytes = ours.Values.Where(v => !v.IsFloat).Sum(v => v.Shape.Aggregate(1L, (a, b) => a * b) * 8);
        var notFp16 = file.Tensors.Where(t => t.ScalarType != ScalarType.Float16 && t.Name != LdmKeyMap.TextPositionIds).Select(t => $"{t.Name} {t.DType}").ToList();
        long dataBytes = file.Tensors.Sum(t => t.ByteLength);
        long fileBytes = new FileInfo(final).Length;
        checks["fp16_size"] = new
        {
            file_bytes = fileBytes,
            data_bytes = dataBytes,
            fp16_data_bytes = 2 * floatElements + otherBytes,
            fp32_data_bytes = 4 * floatElements + otherBytes,
            header_bytes = fileBytes - dataBytes,
            not_fp16 = notFp16,
            ok = notFp16.Count == 0 && dataBytes == 2 * floatElements + otherBytes && fileBytes == file.DataOffset + dataBytes,
        };
        checks["one_state_kept"] = new
        {
            reference = refStates.Select(Path.GetFileName).ToList(),
            interrupted_after_kill = statesAfterKill,
            interrupted_at_end = states.Select(Path.GetFileName).ToList(),
            ok = refStates.Length == 1 && statesAfterKill.Count == 1 && states.Length == 1,
        };
        checks["killed"] = new
        {
            signal = killed.Killed ? "SIGKILL" : null,
            exit_code = killed.ExitCode,
            at = killed.KilledAt,
            pointer_epoch = pointer["epoch"]?.GetValue<int>(),
            pointer_state = pointer["state"]?.GetValue<string>(),
            ok = killed.Killed && pointer["epoch"]?.GetValue<int>() == 1,
        };
        var finalHash = File.Exists(final) ? TensorDataSha256(final) : null;
        var stateHash = states.Length == 1 ? Sha256(states[0]) : null;
        checks["bitwise_resume"] = new
        {
            checkpoint = Path.GetFileName(final),
            // the tensors (names, dtypes, shapes, offsets, bytes): the metadata differs by output_dir
            reference_tensors_sha256 = refCheckpointHash,
            resumed_tensors_sha256 = finalHash,
            state_reference_sha256 = refStateHash,
            state_resumed_sha256 = stateHash,
            saves_reference = refSaves,
            saves_resumed = Directory.GetFiles(killedOut, "recipe_*.safetensors").Select(Path.GetFileName).Order(StringComparer.Ordinal).ToList(),
            ok = finalHash is not null && finalHash == refCheckpointHash && stateHash is not null && stateHash == refStateHash,
        };
        checks["steps"] = new { total = totalSteps, reference = reference.LastStep, resumed = resumed.LastStep, ok = reference.LastStep == totalSteps && resumed.LastStep == totalSteps };
        bool passed = checks.Values.All(v => (bool)v!.GetType().GetProperty("ok")!.GetValue(v)!);
        // the memory arithmetic's prediction of this run's peak (docs/memory.md), beside the peaks measured above
        bool onCuda = device != "cpu" && cuda.is_available();
        var plan = MemoryPlan.For(RecipeConfig(modelFile, instance, classes, refOut, epochs, device), footprint, 64, 64, images: 4, cuda: onCuda);
        w.WriteLine(BenchSupport.Json(new
        {
            bench = "recipe-run",
            model = configs.Model,
            config = "recipe defaults; 64x64, 2 photos + 2 class images, " + epochs + " epochs, a save every epoch",
            checkpoint_bytes = refFinalBytes,
            predicted_peak_bytes = plan.PeakBytes,
            predicted_peak_kind = onCuda ? "MemoryPlan: GPU memory" : "MemoryPlan: process resident memory on the CPU",
            measured_peak_rss_bytes = PeakOf(reference.MemoryLog),
            seconds = BenchSupport.Round(clock.Elapsed.TotalSeconds, 1),
            checks,
            passed,
            load_average = BenchSupport.LoadAverage(),
        }));
        return passed;
    }

    /// <summary>The highest peak resident memory a memory log records.</summary>
    static long PeakOf(string memoryLog) => File.ReadAllLines(memoryLog).Where(l => l.EndsWith('}'))
        .Select(l => JsonNode.Parse(l)!["peak_rss_bytes"]?.GetValue<long>() ?? 0).DefaultIfEmpty(0).Max();

    /// <summary>A 64×64 PNG of a colour gradient (random weights learn nothing from it; the pipeline reads and encodes it).</summary>
    static void WriteImage(string path, int seed)
    {
        var rnd = new Random(seed);
        using var img = new Image<Rgb24>(64, 64);
        byte r = (byte)rnd.Next(256), g = (byte)rnd.Next(256), b = (byte)rnd.Next(256);
        for (int y = 0; y < 64; y++)
            for (int x = 0; x < 64; x++)
                img[x, y] = new Rgb24((byte)(r + x * 2), (byte)(g + y * 3), (byte)(b ^ (x * y)));
        img.SaveAsPng(path);
    }

    public sealed record TrainRun(int ExitCode, bool Killed, string? KilledAt, int LastStep, string MemoryLog);

    /// <summary>
    /// Runs `dreambooth train` with <paramref name="args"/> (+ `--memory-log`) in a child process, its output in
    /// {name}.log. With <paramref name="killAfterStep"/>, SIGKILLs it as soon as its memory log records that step (the
    /// child is then in the next one).
    /// </summary>
    static async Task<TrainRun> RunTrain(string root, string name, string[] args, int? killAfterStep, CancellationToken ct)
    {
        string memoryLog = Path.Combine(root, name + "-memory.jsonl");
        string log = Path.Combine(root, name + ".log");
        var psi = BenchSupport.SelfStartInfo([.. args, "--memory-log", memoryLog]);
        using var proc = Process.Start(psi) ?? throw new InvalidOperationException("could not start dreambooth train");
        var output = new System.Text.StringBuilder();
        proc.OutputDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        proc.ErrorDataReceived += (_, e) => { if (e.Data is not null) lock (output) output.AppendLine(e.Data); };
        proc.BeginOutputReadLine();
        proc.BeginErrorReadLine();
        bool killed = false;
        string? at = null;
        if (killAfterStep is int k)
        {
            // the watch runs on a thread of its own: a thread-pool continuation can wait seconds on a busy machine (the
            // test suite), long enough for a small run to finish before the kill (seen once in CI)
            var watch = new Thread(() =>
            {
                while (!proc.HasExited && !ct.IsCancellationRequested)
                {
                    if (LastStep(memoryLog, proc.Id) >= k)
                    {
                        try { proc.Kill(); }   // SIGKILL on Unix: no handler runs, nothing is flushed
                        catch (InvalidOperationException) { return; }   // it ended on its own just now
                        killed = true;
                        at = $"in step {k + 1}, {DateTime.UtcNow:O}";
                        return;
                    }
                    Thread.Sleep(10);
                }
            }) { IsBackground = true, Name = "recipe-run kill watch" };
            watch.Start();
            await Task.Run(watch.Join, CancellationToken.None);
        }
        try { await proc.WaitForExitAsync(ct); }
        catch (OperationCanceledException)
        {
            proc.Kill();
            throw;
        }
        lock (output) File.AppendAllText(log, output.ToString());
        if (!killed && proc.ExitCode != 0)
            throw new InvalidOperationException($"dreambooth {string.Join(' ', args)} exited with {proc.ExitCode}; see {log}:\n{Tail(output.ToString(), 20)}");
        return new TrainRun(proc.ExitCode, killed, at, LastStep(memoryLog, proc.Id), memoryLog);
    }

    static string Tail(string text, int lines) => string.Join('\n', text.Split('\n').TakeLast(lines));

    /// <summary>The highest step the memory log records for process <paramref name="pid"/> (0 when none).</summary>
    static int LastStep(string memoryLog, int pid)
    {
        if (!File.Exists(memoryLog)) return 0;
        int last = 0;
        using var stream = new FileStream(memoryLog, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete);
        using var reader = new StreamReader(stream);
        while (reader.ReadLine() is { } line)
        {
            if (!line.EndsWith('}')) continue;   // a line being written
            using var doc = JsonDocument.Parse(line);
            var r = doc.RootElement;
            if (r.GetProperty("pid").GetInt32() == pid && r.GetProperty("step").ValueKind == JsonValueKind.Number) last = Math.Max(last, r.GetProperty("step").GetInt32());
        }
        return last;
    }

    /// <summary>
    /// Per process and phase of a memory log: the highest peak, the last resident size, how many, the seconds. A process
    /// is named by its log ({run}-memory.jsonl), "resumed" when it resumed.
    /// </summary>
    public static IEnumerable<Dictionary<string, object?>> PhaseSummary(string memoryLog, string model)
    {
        string run = Path.GetFileName(memoryLog).Replace("-memory.jsonl", "", StringComparison.Ordinal);
        var lines = File.ReadAllLines(memoryLog).Where(l => l.EndsWith('}')).Select(l => JsonNode.Parse(l)!).ToList();
        foreach (var proc in lines.GroupBy(l => l["pid"]!.GetValue<int>()))
        {
            string name = proc.Any(l => l["phase"]!.GetValue<string>() == PhaseMemoryLog.Resume) ? "resumed" : run;
            foreach (var phase in proc.GroupBy(l => l["phase"]!.GetValue<string>()))
            {
                var items = phase.ToList();
                long Peak(JsonNode n) => n["peak_rss_bytes"]?.GetValue<long>() ?? 0;
                var max = items.MaxBy(Peak)!;
                yield return new Dictionary<string, object?>
                {
                    ["bench"] = "recipe-run",
                    ["model"] = model,
                    ["run"] = name,
                    ["phase"] = phase.Key,
                    ["count"] = items.Count,
                    ["peak_rss_mib"] = Peak(max) >> 20,
                    ["peak_rss_gb"] = BenchSupport.Round(Peak(max) / 1e9, 2),
                    ["peak_at_step"] = max["step"]?.GetValue<int>(),
                    ["rss_after_mib"] = (items[^1]["rss_bytes"]?.GetValue<long>() ?? 0) >> 20,
                    ["device_peak_used_mib"] = items.Max(i => i["device_peak_used_bytes"]?.GetValue<long>()) is long d ? d >> 20 : null,
                    ["seconds_each"] = BenchSupport.Round(items.Average(i => i["seconds"]!.GetValue<double>()), 1),
                };
            }
        }
    }

    /// <summary>
    /// Keys of a JSON key list: <c>{"original": {key: shape}}</c> (tools/parity's sd15-keys.json, from diffusers' converter),
    /// <c>{key: shape}</c>, or <c>[key, ...]</c> (no shapes).
    /// </summary>
    public static Dictionary<string, long[]?> ReadKeyList(string path)
    {
        if (!File.Exists(path)) throw new DreamBoothException($"--expected-keys: {path} not found");
        JsonNode? node;
        try { node = JsonNode.Parse(File.ReadAllText(path)); }
        catch (JsonException e) { throw new DreamBoothException($"--expected-keys: {path} is not valid JSON ({e.Message})"); }
        if (node is JsonObject o && o["original"] is JsonObject original) node = original;
        return node switch
        {
            JsonObject keys => keys.ToDictionary(kv => kv.Key, kv => kv.Value is JsonArray a ? a.Select(x => x!.GetValue<long>()).ToArray() : null, StringComparer.Ordinal),
            JsonArray list => list.Select(x => x!.GetValue<string>()).ToDictionary(k => k, _ => (long[]?)null, StringComparer.Ordinal),
            _ => throw new DreamBoothException($"--expected-keys: {path}: expected {{\"original\": {{key: shape}}}}, {{key: shape}} or [key, ...]"),
        };
    }

    /// <summary>Keys the file lacks, keys it has beyond the list (and <paramref name="allowExtra"/>), and keys whose shape differs.</summary>
    public static (List<string> Missing, List<string> Unexpected, List<string> Misshaped) CompareKeys(SafeTensorsFile file, IReadOnlyDictionary<string, long[]?> expected, IReadOnlyCollection<string>? allowExtra = null)
    {
        var found = file.Tensors.ToDictionary(t => t.Name, t => t.Shape, StringComparer.Ordinal);
        var missing = expected.Keys.Where(k => !found.ContainsKey(k)).Order(StringComparer.Ordinal).ToList();
        var unexpected = found.Keys.Where(k => !expected.ContainsKey(k) && !(allowExtra?.Contains(k) ?? false)).Order(StringComparer.Ordinal).ToList();
        var misshaped = expected.Where(kv => kv.Value is not null && found.TryGetValue(kv.Key, out var s) && !s.SequenceEqual(kv.Value))
            .Select(kv => $"{kv.Key} [{string.Join(",", found[kv.Key])}] expected [{string.Join(",", kv.Value!)}]").ToList();
        return (missing, unexpected, misshaped);
    }

    /// <summary>
    /// SHA-256 over a safetensors file's tensor table (name, dtype, shape, offsets, in order) and data region: every
    /// tensor, leaving out the metadata (which names the run's output folder).
    /// </summary>
    public static string TensorDataSha256(string path)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        long dataOffset;
        using (var file = SafeTensors.Open(path))
        {
            foreach (var t in file.Tensors)
                sha.AppendData(System.Text.Encoding.UTF8.GetBytes($"{t.Name}|{t.DType}|{string.Join(",", t.Shape)}|{t.Begin}|{t.End}\n"));
            dataOffset = file.DataOffset;
        }
        using var stream = File.OpenRead(path);
        stream.Position = dataOffset;
        var buffer = new byte[1 << 20];
        int n;
        while ((n = stream.Read(buffer)) > 0) sha.AppendData(buffer.AsSpan(0, n));
        return Convert.ToHexStringLower(sha.GetHashAndReset());
    }

    static string Sha256(string path)
    {
        using var stream = File.OpenRead(path);
        return Convert.ToHexStringLower(SHA256.HashData(stream));
    }
}
