using DreamBooth.Runtime;
using DreamBooth.Text;

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
}
