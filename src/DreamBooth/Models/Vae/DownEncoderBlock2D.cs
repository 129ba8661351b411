using DreamBooth.Models.UNet;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>diffusers <c>DownEncoderBlock2D</c>: resnets without time embedding, then an optional stride-2 downsampler (padding 0).</summary>
public sealed class DownEncoderBlock2D : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Downsample2D>? downsamplers;

    public DownEncoderBlock2D(long inChannels, long outChannels, int numLayers, double resnetEps, int resnetGroups,
        bool addDownsample, int downsamplePadding = 0) : base(nameof(DownEncoderBlock2D))
    {
        resnets = nn.ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, null, resnetGroups, resnetEps));
        if (addDownsample) downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, downsamplePadding));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        foreach (var resnet in resnets) hidden_states = resnet.forward(hidden_states, null);
        if (downsamplers is not null) hidden_states = downsamplers[0].forward(hidden_states);
        return hidden_states.MoveToOuterDisposeScope();
    }
}
