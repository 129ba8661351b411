using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models;

/// <summary>Layer constructors that need a fix-up over TorchSharp 0.107's own.</summary>
static class Layers
{
    /// <summary>
    /// An affine GroupNorm initialised as PyTorch does (weight 1, bias 0). TorchSharp 0.107's <c>nn.GroupNorm</c> leaves
    /// its affine parameters as uninitialised memory (garbage, sometimes NaN), so every GroupNorm here goes through this.
    /// </summary>
    public static GroupNorm GroupNorm(long numGroups, long numChannels, double eps)
    {
        var norm = nn.GroupNorm(numGroups, numChannels, eps, affine: true);
        using (no_grad())
        {
            norm.weight!.fill_(1.0);
            norm.bias!.zero_();
        }
        return norm;
    }
}
