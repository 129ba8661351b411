using DreamBooth.Models.UNet;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>
/// diffusers <c>UNetMidBlock2D</c> as the VAE uses it: resnet, then (single-head spatial <c>Attention</c> with its own
/// group_norm and residual → resnet) × layers; no time embedding.
/// </summary>
public sealed class UNetMidBlock2D : nn.Module<Tensor, Tensor>
{
    readonly ModuleList<Attention.Attention> attentions;
    readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2D(long inChannels, double resnetEps, int resnetGroups, int numLayers = 1, double outputScaleFactor = 1.0)
        : base(nameof(UNetMidBlock2D))
    {
        resnets = nn.ModuleList(new ResnetBlock2D(inChannels, inChannels, null, resnetGroups, resnetEps, 0.0, outputScaleFactor));
        attentions = nn.ModuleList<Attention.Attention>();
        for (int i = 0; i < numLayers; i++)
        {
            // attention_head_dim = in_channels → one head of in_channels
            attentions.Add(new Attention.Attention(inChannels, null, heads: 1, dimHead: (int)inChannels, bias: true,
                normNumGroups: resnetGroups, normEps: resnetEps, residualConnection: true, rescaleOutputFactor: outputScaleFactor));
            resnets.Add(new ResnetBlock2D(inChannels, inChannels, null, resnetGroups, resnetEps, 0.0, outputScaleFactor));
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = NewDisposeScope();
        hidden_states = resnets[0].forward(hidden_states, null);
        for (int i = 0; i < attentions.Count; i++)
        {
            hidden_states = attentions[i].forward(hidden_states, null);
            hidden_states = resnets[i + 1].forward(hidden_states, null);
        }
        return hidden_states.MoveToOuterDisposeScope();
    }
}
