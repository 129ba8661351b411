using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Attention;

/// <summary>
/// diffusers <c>Transformer2DModel</c> (continuous input): GroupNorm, proj_in (1×1 conv in SD1.x, linear
/// when <c>use_linear_projection</c>), transformer blocks over the H·W tokens, proj_out, plus the input.
/// </summary>
public sealed class Transformer2DModel : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly GroupNorm norm;
    readonly nn.Module<Tensor, Tensor> proj_in;
    readonly ModuleList<BasicTransformerBlock> transformer_blocks;
    readonly nn.Module<Tensor, Tensor> proj_out;
    readonly bool useLinearProjection;

    public Transformer2DModel(int numAttentionHeads, int attentionHeadDim, long inChannels, long crossAttentionDim,
        int numLayers = 1, int normNumGroups = 32, bool useLinearProjection = false, bool upcastAttention = false,
        double dropout = 0.0) : base(nameof(Transformer2DModel))
    {
        this.useLinearProjection = useLinearProjection;
        long inner = (long)numAttentionHeads * attentionHeadDim;
        norm = Layers.GroupNorm(normNumGroups, inChannels, 1e-6);
        proj_in = useLinearProjection ? Layers.Linear(inChannels, inner) : Layers.Conv2d(inChannels, inner, 1);
        transformer_blocks = nn.ModuleList<BasicTransformerBlock>();
        for (int i = 0; i < numLayers; i++)
            transformer_blocks.Add(new BasicTransformerBlock(inner, numAttentionHeads, attentionHeadDim, crossAttentionDim, dropout, upcastAttention));
        proj_out = useLinearProjection ? Layers.Linear(inner, inChannels) : Layers.Conv2d(inner, inChannels, 1);
        RegisterComponents();
    }

    /// <param name="hidden_states">[B, C, H, W].</param>
    /// <param name="encoder_hidden_states">[B, L, cross_dim].</param>
    public override Tensor forward(Tensor hidden_states, Tensor? encoder_hidden_states)
    {
        using var scope = NewDisposeScope();
        long b = hidden_states.shape[0], h = hidden_states.shape[2], w = hidden_states.shape[3];
        var residual = hidden_states;
        var x = norm.forward(hidden_states);
        long inner;
        if (!useLinearProjection)
        {
            x = proj_in.forward(x);
            inner = x.shape[1];
            x = x.permute(0, 2, 3, 1).reshape(b, h * w, inner);
        }
        else
        {
            x = x.permute(0, 2, 3, 1).reshape(b, h * w, x.shape[1]);
            x = proj_in.forward(x);
            inner = x.shape[2];
        }
        foreach (var block in transformer_blocks) x = block.forward(x, encoder_hidden_states);
        if (!useLinearProjection)
        {
            x = x.reshape(b, h, w, inner).permute(0, 3, 1, 2).contiguous();
            x = proj_out.forward(x);
        }
        else
        {
            x = proj_out.forward(x);
            x = x.reshape(b, h, w, x.shape[2]).permute(0, 3, 1, 2).contiguous();
        }
        return (x + residual).MoveToOuterDisposeScope();
    }
}
