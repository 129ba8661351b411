using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>
/// diffusers <c>ResnetBlock2D</c> (time_embedding_norm "default"): norm1 → SiLU → conv1 (+ projected time
/// embedding) → norm2 → SiLU → dropout → conv2, added to the input (through a 1×1 <c>conv_shortcut</c> when the
/// channel count changes), divided by <c>output_scale_factor</c>. Without time embedding (VAE) there is no time_emb_proj.
/// </summary>
public sealed class ResnetBlock2D : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly GroupNorm norm1;
    readonly Conv2d conv1;
    readonly Linear? time_emb_proj;
    readonly GroupNorm norm2;
    readonly Dropout dropout;
    readonly Conv2d conv2;
    readonly SiLU nonlinearity;
    readonly Conv2d? conv_shortcut;
    readonly double outputScaleFactor;

    public ResnetBlock2D(long inChannels, long outChannels, long? tembChannels, int groups = 32, double eps = 1e-6,
        double dropout = 0.0, double outputScaleFactor = 1.0) : base(nameof(ResnetBlock2D))
    {
        this.outputScaleFactor = outputScaleFactor;
        norm1 = Layers.GroupNorm(groups, inChannels, eps);
        conv1 = Layers.Conv2d(inChannels, outChannels, 3, stride: 1, padding: 1);
        if (tembChannels is long t) time_emb_proj = Layers.Linear(t, outChannels);
        norm2 = Layers.GroupNorm(groups, outChannels, eps);
        this.dropout = nn.Dropout(dropout);
        conv2 = Layers.Conv2d(outChannels, outChannels, 3, stride: 1, padding: 1);
        nonlinearity = nn.SiLU();
        if (inChannels != outChannels) conv_shortcut = Layers.Conv2d(inChannels, outChannels, 1, stride: 1, padding: 0L);
        RegisterComponents();
    }

    /// <param name="input_tensor">[B, C_in, H, W].</param>
    /// <param name="temb">[B, temb_channels], or null (VAE).</param>
    public override Tensor forward(Tensor input_tensor, Tensor? temb)
    {
        using var scope = NewDisposeScope();
        var h = conv1.forward(nonlinearity.forward(norm1.forward(input_tensor)));
        if (time_emb_proj is not null && temb is not null)
            h = h + time_emb_proj.forward(nonlinearity.forward(temb)).unsqueeze(-1).unsqueeze(-1);
        h = conv2.forward(dropout.forward(nonlinearity.forward(norm2.forward(h))));
        var x = conv_shortcut is null ? input_tensor : conv_shortcut.forward(input_tensor);
        var output = x + h;
        if (outputScaleFactor != 1.0) output = output / outputScaleFactor;
        return output.MoveToOuterDisposeScope();
    }
}
