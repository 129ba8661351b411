using DreamBooth.Models.Attention;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>diffusers <c>UNetMidBlock2DCrossAttn</c>: resnet, then (Transformer2DModel → resnet) × layers.</summary>
public sealed class UNetMidBlock2DCrossAttn : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly ModuleList<Transformer2DModel> attentions;
    readonly ModuleList<ResnetBlock2D> resnets;

    public UNetMidBlock2DCrossAttn(long inChannels, long tembChannels, double resnetEps, int resnetGroups,
        int numAttentionHeads, long crossAttentionDim, int numLayers = 1, double outputScaleFactor = 1.0,
        bool useLinearProjection = false, bool upcastAttention = false, double dropout = 0.0) : base(nameof(UNetMidBlock2DCrossAttn))
    {
        resnets = nn.ModuleList(new ResnetBlock2D(inChannels, inChannels, tembChannels, resnetGroups, resnetEps, dropout, outputScaleFactor));
        attentions = nn.ModuleList<Transformer2DModel>();
        for (int i = 0; i < numLayers; i++)
        {
            attentions.Add(new Transformer2DModel(numAttentionHeads, (int)(inChannels / numAttentionHeads), inChannels, crossAttentionDim,
                normNumGroups: resnetGroups, useLinearProjection: useLinearProjection, upcastAttention: upcastAttention, dropout: dropout));
            resnets.Add(new ResnetBlock2D(inChannels, inChannels, tembChannels, resnetGroups, resnetEps, dropout, outputScaleFactor));
        }
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states, Tensor temb, Tensor encoder_hidden_states)
    {
        using var scope = NewDisposeScope();
        hidden_states = resnets[0].forward(hidden_states, temb);
        for (int i = 0; i < attentions.Count; i++)
        {
            hidden_states = attentions[i].forward(hidden_states, encoder_hidden_states);
            hidden_states = resnets[i + 1].forward(hidden_states, temb);
        }
        return hidden_states.MoveToOuterDisposeScope();
    }
}
