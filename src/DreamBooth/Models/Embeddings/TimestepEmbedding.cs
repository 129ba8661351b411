using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Embeddings;

/// <summary>diffusers <c>TimestepEmbedding</c>: linear_1 → SiLU → linear_2.</summary>
public sealed class TimestepEmbedding : nn.Module<Tensor, Tensor>
{
    readonly Linear linear_1;
    readonly SiLU act;
    readonly Linear linear_2;

    public TimestepEmbedding(long inChannels, long timeEmbedDim) : base(nameof(TimestepEmbedding))
    {
        linear_1 = Layers.Linear(inChannels, timeEmbedDim);
        act = nn.SiLU();
        linear_2 = Layers.Linear(timeEmbedDim, timeEmbedDim);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        return linear_2.forward(act.forward(linear_1.forward(sample))).MoveToOuterDisposeScope();
    }
}
