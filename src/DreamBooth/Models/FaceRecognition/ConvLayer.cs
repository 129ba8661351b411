using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.FaceRecognition;

/// <summary>
/// face-api's conv layer: a convolution with bias (<c>conv</c>), then a <see cref="ScaleLayer"/> (<c>scale</c>), then
/// ReLU unless it is the second conv of a residual block. Stride 1 uses TF "same" padding (k/2 each side for odd k);
/// the down-sampling convs use stride 2 and TF "valid" padding (none).
/// </summary>
public sealed class ConvLayer : nn.Module<Tensor, Tensor>
{
    readonly FilterConv conv;
    readonly ScaleLayer scale;
    readonly bool relu;

    public ConvLayer(long inChannels, long outChannels, long kernel, bool down, bool relu = true) : base(nameof(ConvLayer))
    {
        conv = new FilterConv(inChannels, outChannels, kernel, stride: down ? 2 : 1, padding: down ? 0 : kernel / 2);
        scale = new ScaleLayer(outChannels);
        this.relu = relu;
        RegisterComponents();
    }

    /// <param name="x">[B, C_in, H, W].</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        var h = scale.forward(conv.forward(x));
        if (relu) h = nn.functional.relu(h);
        return h.MoveToOuterDisposeScope();
    }
}
