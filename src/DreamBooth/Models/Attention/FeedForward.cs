using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Attention;

/// <summary>diffusers <c>FeedForward</c> with GEGLU: net = [GEGLU(dim → 4·dim), Dropout, Linear(4·dim → dim)].</summary>
public sealed class FeedForward : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<nn.Module<Tensor, Tensor>> net;

    public FeedForward(long dim, long? dimOut = null, int mult = 4, double dropout = 0.0) : base(nameof(FeedForward))
    {
        long inner = dim * mult;
        net = nn.ModuleList<nn.Module<Tensor, Tensor>>(new GEGLU(dim, inner), nn.Dropout(dropout), Layers.Linear(inner, dimOut ?? dim));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        foreach (var module in net) hidden_states = module.forward(hidden_states);
        return hidden_states.MoveToOuterDisposeScope();
    }
}
