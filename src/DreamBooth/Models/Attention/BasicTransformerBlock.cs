using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Attention;

/// <summary>
/// diffusers <c>BasicTransformerBlock</c> (pre-norm): self-attention, cross-attention on the text
/// states, GEGLU feed-forward, each added back to its input.
/// </summary>
public sealed class BasicTransformerBlock : nn.Module<Tensor, Tensor?, Tensor>
{
    readonly LayerNorm norm1;
    readonly Attention attn1;
    readonly LayerNorm norm2;
    readonly Attention attn2;
    readonly LayerNorm norm3;
    readonly FeedForward ff;

    public BasicTransformerBlock(long dim, int numAttentionHeads, int attentionHeadDim, long crossAttentionDim,
        double dropout = 0.0, bool upcastAttention = false, double normEps = 1e-5) : base(nameof(BasicTransformerBlock))
    {
        norm1 = Layers.LayerNorm(dim, normEps);
        attn1 = new Attention(dim, null, numAttentionHeads, attentionHeadDim, dropout, bias: false, upcastAttention);
        norm2 = Layers.LayerNorm(dim, normEps);
        attn2 = new Attention(dim, crossAttentionDim, numAttentionHeads, attentionHeadDim, dropout, bias: false, upcastAttention);
        norm3 = Layers.LayerNorm(dim, normEps);
        ff = new FeedForward(dim, dropout: dropout);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states, Tensor? encoder_hidden_states)
    {
        using var scope = NewDisposeScope();
        hidden_states = attn1.forward(norm1.forward(hidden_states), null) + hidden_states;
        hidden_states = attn2.forward(norm2.forward(hidden_states), encoder_hidden_states) + hidden_states;
        hidden_states = ff.forward(norm3.forward(hidden_states)) + hidden_states;
        return hidden_states.MoveToOuterDisposeScope();
    }
}
