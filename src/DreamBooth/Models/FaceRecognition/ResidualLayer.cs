using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Models.FaceRecognition;

/// <summary>
/// face-api's residual block (dlib's ResNet block): <c>conv1</c> (3×3, ReLU) → <c>conv2</c> (3×3, no ReLU), added to
/// the input, ReLU. The down-sampling variant uses a stride-2 "valid" <c>conv1</c> and a shortcut of 2×2 average
/// pooling, zero-padded to the block's channels (when they double) and the main path zero-padded on the bottom/right
/// to the pooled size (when the strided conv came out one smaller, 4×4 → 1×1 vs 2×2).
/// </summary>
public sealed class ResidualLayer : nn.Module<Tensor, Tensor>
{
    readonly ConvLayer conv1;
    readonly ConvLayer conv2;
    readonly bool down;

    public ResidualLayer(long inChannels, long outChannels, bool down = false) : base(nameof(ResidualLayer))
    {
        if (!down && inChannels != outChannels) throw new ArgumentException("a residual layer that keeps the size keeps the channels");
        conv1 = new ConvLayer(inChannels, outChannels, 3, down);
        conv2 = new ConvLayer(outChannels, outChannels, 3, down: false, relu: false);
        this.down = down;
        RegisterComponents();
    }

    /// <param name="x">[B, C_in, H, W].</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = conv2.forward(conv1.forward(x));
        var shortcut = x;
        if (down)
        {
            shortcut = nn.functional.avg_pool2d(x, 2, 2);
            if (shortcut.shape[1] != h.shape[1])
                shortcut = cat([shortcut, zeros_like(shortcut)], 1);
            long padH = shortcut.shape[2] - h.shape[2], padW = shortcut.shape[3] - h.shape[3];
            if (padH < 0 || padW < 0 || shortcut.shape[1] != h.shape[1])
                throw new InvalidOperationException($"residual down block: pooled {Shape(shortcut)} does not cover the conv output {Shape(h)}");
            if (padH > 0 || padW > 0) h = nn.functional.pad(h, [0, padW, 0, padH]);
        }
        return nn.functional.relu(h + shortcut).MoveToOuterDisposeScope();
    }

    static string Shape(Tensor t) => "[" + string.Join(", ", t.shape) + "]";
}
