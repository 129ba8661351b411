using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.FaceRecognition;

/// <summary>
/// A 2-D convolution with bias whose parameters (<c>weight</c> [out, in, k, k], <c>bias</c>) start at zero: the
/// net only ever runs with face-api's weights, so construction draws nothing from torch's global random generator
/// (nn.Conv2d's Kaiming init would, racing with any test or caller that seeds it and then builds a model).
/// </summary>
public sealed class FilterConv : nn.Module<Tensor, Tensor>
{
    readonly Parameter weight;
    readonly Parameter bias;
    readonly long stride;
    readonly long padding;

    public FilterConv(long inChannels, long outChannels, long kernel, long stride, long padding) : base(nameof(FilterConv))
    {
        weight = nn.Parameter(zeros(outChannels, inChannels, kernel, kernel), requires_grad: false);
        bias = nn.Parameter(zeros(outChannels), requires_grad: false);
        this.stride = stride;
        this.padding = padding;
        RegisterComponents();
    }

    /// <param name="x">[B, C_in, H, W].</param>
    public override Tensor forward(Tensor x) => nn.functional.conv2d(x, weight, bias, strides: [stride, stride], padding: [padding, padding]);
}
