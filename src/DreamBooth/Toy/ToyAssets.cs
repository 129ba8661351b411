using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Runtime;
using DreamBooth.Text;
using TorchSharp;

namespace DreamBooth.Toy;

/// <summary>
/// The embedded toy files in <c>data-samples/toy/</c>: the sample subject and the pretrained toy model with its
/// tokenizer. Found through $DREAMBOOTH_TOY, else the nearest ancestor of the app/current folder holding
/// <c>data-samples/toy</c>.
/// </summary>
public static class ToyAssets
{
    public const string EnvVar = "DREAMBOOTH_TOY";

    public static string Root
    {
        get
        {
            var env = Environment.GetEnvironmentVariable(EnvVar);
            if (!string.IsNullOrEmpty(env))
                return Directory.Exists(env) ? env : throw new DreamBoothException($"{EnvVar}={env}: folder not found (expected data-samples/toy)");
            return WorkbenchPaths.FindUpwards(Path.Combine("data-samples", "toy"))
                ?? throw new DreamBoothException($"data-samples/toy not found above {AppContext.BaseDirectory} or the current folder; run from the repository or set {EnvVar}");
        }
    }

    /// <summary>data-samples/toy/subject: the "ohwx man" instance images (PNG + .txt).</summary>
    public static string SubjectDirectory => Path.Combine(Root, "subject");

    /// <summary>data-samples/toy/model: the pretrained toy model and its tokenizer/.</summary>
    public static string ModelDirectory => Path.Combine(Root, "model");

    /// <summary>data-samples/toy/model/tokenizer: CLIP's BPE vocabulary as vocab.json + merges.txt.</summary>
    public static string TokenizerDirectory => Path.Combine(ModelDirectory, "tokenizer");

    public static ClipTokenizer Tokenizer()
    {
        var dir = TokenizerDirectory;
        if (!File.Exists(Path.Combine(dir, "vocab.json")))
            throw new DreamBoothException($"{dir}: the toy tokenizer (vocab.json + merges.txt) is missing; write it with 'dreambooth toy tokenizer --bpe bpe_simple_vocab_16e6.txt.gz --output {dir}'");
        return ClipTokenizer.FromDirectory(dir);
    }

    /// <summary>The toy model's single-file checkpoint (A1111/LDM layout, fp16) inside a model folder.</summary>
    public const string CheckpointFileName = "toy-sd.safetensors";

    /// <summary>data-samples/toy/model/toy-sd.safetensors.</summary>
    public static string CheckpointPath => Path.Combine(ModelDirectory, CheckpointFileName);

    /// <summary>
    /// What <see cref="StableDiffusionModel.Load"/> needs for the toy single file (single files carry no configs):
    /// the folder's tokenizer/ and config/{text_encoder,unet,vae}.json.
    /// </summary>
    public static ModelLoadOptions LoadOptions(string? modelDir = null)
    {
        var dir = modelDir ?? ModelDirectory;
        var options = StableDiffusionModel.SidecarOptions(dir);
        if (options.TextEncoderConfig is null || options.UNetConfig is null || options.VaeConfig is null || options.TokenizerPath is null)
            throw new DreamBoothException($"{dir}: a toy model folder needs {StableDiffusionModel.ConfigFolder}/text_encoder.json, unet.json, vae.json and {StableDiffusionModel.TokenizerFolder}/vocab.json beside {CheckpointFileName}");
        return options;
    }

    /// <summary>Loads the pretrained toy model (default: the embedded one in data-samples/toy/model).</summary>
    public static StableDiffusionModel LoadModel(string? modelDir = null)
    {
        var dir = modelDir ?? ModelDirectory;
        var file = Path.Combine(dir, CheckpointFileName);
        if (!File.Exists(file))
            throw new DreamBoothException($"{file}: toy model not found; make one with 'dreambooth toy pretrain --output DIR' (it writes DIR/model/)");
        return StableDiffusionModel.Load(file, LoadOptions(dir));
    }

    /// <summary>
    /// Writes a toy model folder: toy-sd.safetensors (single file, fp16), tokenizer/, and config/ (text_encoder.json,
    /// unet.json, vae.json with the pretrained scaling_factor, scheduler_config.json).
    /// </summary>
    public static void Export(StableDiffusionModel model, string modelDir, IReadOnlyDictionary<string, string>? metadata = null)
    {
        Directory.CreateDirectory(modelDir);
        model.WriteSidecar(modelDir);
        model.SaveSingleFile(Path.Combine(modelDir, CheckpointFileName), torch.ScalarType.Float16, metadata);
    }
}
