using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Attention;

/// <summary>diffusers <c>GEGLU</c>: one projection to twice the width, split in value and gate, value · GELU(gate).</summary>
public sealed class GEGLU : nn.Module<Tensor, Tensor>
{
    readonly Linear proj;

    public GEGLU(long dimIn, long dimOut) : base(nameof(GEGLU))
    {
        proj = Layers.Linear(dimIn, dimOut * 2);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        var parts = proj.forward(hidden_states).chunk(2, -1);
        return (parts[0] * nn.functional.gelu(parts[1])).MoveToOuterDisposeScope();
    }
}
