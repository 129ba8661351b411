using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models;

/// <summary>
/// The parameterised layers every model class is built from (TorchSharp's, with PyTorch's initialisation), and the
/// switch that builds them without memory: inside <see cref="OnMeta"/>, their parameters live on the meta device
/// (shapes and dtypes only; random initialisation is a no-op there). A checkpoint loader builds the modules that way and
/// then gives every parameter its storage straight from the file (<c>Checkpoints.StateDictLoader</c>), so a load
/// neither allocates nor initialises a throw-away copy of the model.
/// </summary>
static class Layers
{
    [ThreadStatic] static int _metaDepth;

    /// <summary>True while this thread builds modules on the meta device.</summary>
    public static bool BuildingOnMeta => _metaDepth > 0;

    /// <summary>
    /// Until disposed, layers built on this thread get meta parameters. Per thread (unlike TorchSharp's process-wide
    /// <c>set_default_device</c>), so other threads building or running models are not affected.
    /// </summary>
    public static IDisposable OnMeta()
    {
        _metaDepth++;
        return new MetaScope();
    }

    sealed class MetaScope : IDisposable
    {
        bool _done;
        public void Dispose()
        {
            if (_done) return;
            _done = true;
            _metaDepth--;
        }
    }

    static Device? BuildDevice => _metaDepth > 0 ? META : null;

    public static Linear Linear(long inFeatures, long outFeatures, bool hasBias = true) =>
        nn.Linear(inFeatures, outFeatures, hasBias, device: BuildDevice);

    public static Conv2d Conv2d(long inChannels, long outChannels, long kernelSize, long stride = 1, long padding = 0) =>
        nn.Conv2d(inChannels, outChannels, kernelSize, stride: stride, padding: padding, device: BuildDevice);

    public static Embedding Embedding(long numEmbeddings, long embeddingDim)
    {
        if (_metaDepth == 0) return nn.Embedding(numEmbeddings, embeddingDim);
        // TorchSharp's Embedding is a native module that always creates and initialises its weight on the CPU; moved
        // to meta, the module still holds that CPU tensor (150 MiB for CLIP's token embedding) until it is disposed.
        // So on meta: a one-row native module whose weight is then replaced by the full-size meta one (forward uses
        // the weight it is given; only the construction-time row stays behind, a few KiB).
        var embedding = nn.Embedding(1, embeddingDim);
        var constructed = embedding.named_parameters(recurse: false).Select(p => p.parameter).ToList();
        embedding.weight = new Parameter(empty(numEmbeddings, embeddingDim, device: META));
        foreach (var p in constructed) p.Dispose();
        return embedding;
    }

    public static LayerNorm LayerNorm(long normalizedShape, double eps) =>
        nn.LayerNorm(normalizedShape, eps, device: BuildDevice);

    /// <summary>
    /// An affine GroupNorm initialised as PyTorch does (weight 1, bias 0). TorchSharp 0.107's <c>nn.GroupNorm</c> leaves
    /// its affine parameters as uninitialised memory (garbage, sometimes NaN), so every GroupNorm here goes through this.
    /// </summary>
    public static GroupNorm GroupNorm(long numGroups, long numChannels, double eps)
    {
        var norm = nn.GroupNorm(numGroups, numChannels, eps, affine: true, device: BuildDevice);
        using (no_grad())
        {
            norm.weight!.fill_(1.0);
            norm.bias!.zero_();
        }
        return norm;
    }
}
