using DreamBooth.Models.Attention;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>
/// diffusers <c>CrossAttnDownBlock2D</c>: (resnet → Transformer2DModel) × layers, then an optional downsampler;
/// every output is a skip connection.
/// </summary>
public sealed class CrossAttnDownBlock2D : UNetDownBlock
{
    readonly ModuleList<Transformer2DModel> attentions;
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Downsample2D>? downsamplers;

    public CrossAttnDownBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers, double resnetEps,
        int resnetGroups, int numAttentionHeads, long crossAttentionDim, bool addDownsample, int downsamplePadding = 1,
        bool useLinearProjection = false, bool upcastAttention = false, double dropout = 0.0,
        double outputScaleFactor = 1.0) : base(nameof(CrossAttnDownBlock2D))
    {
        resnets = nn.ModuleList<ResnetBlock2D>();
        attentions = nn.ModuleList<Transformer2DModel>();
        for (int i = 0; i < numLayers; i++)
        {
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, resnetGroups, resnetEps, dropout, outputScaleFactor));
            attentions.Add(new Transformer2DModel(numAttentionHeads, (int)(outChannels / numAttentionHeads), outChannels, crossAttentionDim,
                normNumGroups: resnetGroups, useLinearProjection: useLinearProjection, upcastAttention: upcastAttention, dropout: dropout));
        }
        if (addDownsample) downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, downsamplePadding));
        RegisterComponents();
    }

    public override int SkipCount => resnets.Count + (downsamplers is null ? 0 : 1);

    public override Tensor[] Forward(Tensor hidden_states, Tensor temb, Tensor encoder_hidden_states)
    {
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        for (int i = 0; i < resnets.Count; i++)
        {
            hidden_states = resnets[i].forward(hidden_states, temb);
            hidden_states = attentions[i].forward(hidden_states, encoder_hidden_states);
            outputs.Add(hidden_states);
        }
        if (downsamplers is not null)
        {
            hidden_states = downsamplers[0].forward(hidden_states);
            outputs.Add(hidden_states);
        }
        outputs.Insert(0, hidden_states);
        var result = outputs.ToArray();
        scope.MoveToOuter(result);
        return result;
    }
}
