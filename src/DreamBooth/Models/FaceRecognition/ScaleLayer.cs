using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.FaceRecognition;

/// <summary>face-api's <c>scale</c> layer (dlib's affine layer, a folded batch norm): x × weights + biases per channel.</summary>
public sealed class ScaleLayer : nn.Module<Tensor, Tensor>
{
    readonly Parameter weights;
    readonly Parameter biases;

    public ScaleLayer(long channels) : base(nameof(ScaleLayer))
    {
        weights = nn.Parameter(ones(channels), requires_grad: false);
        biases = nn.Parameter(zeros(channels), requires_grad: false);
        RegisterComponents();
    }

    /// <param name="x">[B, C, H, W].</param>
    public override Tensor forward(Tensor x)
    {
        using var scope = NewDisposeScope();
        return (x * weights.view(1, -1, 1, 1) + biases.view(1, -1, 1, 1)).MoveToOuterDisposeScope();
    }
}
