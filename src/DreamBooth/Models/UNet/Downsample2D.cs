using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>
/// diffusers <c>Downsample2D</c> with a conv: 3×3 stride-2 <c>conv</c>. With padding 0 (the VAE encoder) the input is
/// first padded by one pixel on the right and bottom, as diffusers does.
/// </summary>
public sealed class Downsample2D : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv;
    readonly int padding;

    public Downsample2D(long channels, long outChannels, int padding = 1) : base(nameof(Downsample2D))
    {
        this.padding = padding;
        conv = Layers.Conv2d(channels, outChannels, 3, stride: 2, padding: padding);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        if (padding == 0) hidden_states = nn.functional.pad(hidden_states, [0, 1, 0, 1], PaddingModes.Constant, 0);
        return conv.forward(hidden_states).MoveToOuterDisposeScope();
    }
}
