using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>diffusers <c>Upsample2D</c> with a conv: nearest-neighbour 2× (or to an explicit size), then a 3×3 <c>conv</c>.</summary>
public sealed class Upsample2D : nn.Module<Tensor, long[]?, Tensor>
{
    readonly Conv2d conv;

    public Upsample2D(long channels, long outChannels) : base(nameof(Upsample2D))
    {
        conv = Layers.Conv2d(channels, outChannels, 3, stride: 1, padding: 1);
        RegisterComponents();
    }

    /// <param name="hidden_states">[B, C, H, W].</param>
    /// <param name="output_size">[H', W'] to upsample to (the skip connection's size), or null for exactly 2×.</param>
    public override Tensor forward(Tensor hidden_states, long[]? output_size)
    {
        using var scope = NewDisposeScope();
        var up = output_size is null
            ? nn.functional.interpolate(hidden_states, scale_factor: [2.0, 2.0], mode: InterpolationMode.Nearest)
            : nn.functional.interpolate(hidden_states, size: output_size, mode: InterpolationMode.Nearest);
        return conv.forward(up).MoveToOuterDisposeScope();
    }
}
