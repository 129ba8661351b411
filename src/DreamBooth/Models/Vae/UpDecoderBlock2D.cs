using DreamBooth.Models.UNet;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>diffusers <c>UpDecoderBlock2D</c>: resnets without time embedding, then an optional nearest 2× upsampler.</summary>
public sealed class UpDecoderBlock2D : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Upsample2D>? upsamplers;

    public UpDecoderBlock2D(long inChannels, long outChannels, int numLayers, double resnetEps, int resnetGroups, bool addUpsample)
        : base(nameof(UpDecoderBlock2D))
    {
        resnets = nn.ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, null, resnetGroups, resnetEps));
        if (addUpsample) upsamplers = nn.ModuleList(new Upsample2D(outChannels, outChannels));
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        foreach (var resnet in resnets) hidden_states = resnet.forward(hidden_states, null);
        if (upsamplers is not null) hidden_states = upsamplers[0].forward(hidden_states, null);
        return hidden_states.MoveToOuterDisposeScope();
    }
}
