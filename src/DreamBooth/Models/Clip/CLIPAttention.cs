using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>Multi-head causal self-attention with transformers' projection names, through scaled_dot_product_attention.</summary>
public sealed class CLIPAttention : nn.Module<Tensor, Tensor>
{
    // Declared in transformers' order (k, v, q, out) so state dicts list keys as transformers saves them.
    private readonly Linear k_proj;
    private readonly Linear v_proj;
    private readonly Linear q_proj;
    private readonly Linear out_proj;
    private readonly int _heads;
    private readonly int _headDim;

    public CLIPAttention(CLIPTextConfig config) : base(nameof(CLIPAttention))
    {
        _heads = config.NumAttentionHeads;
        _headDim = config.HeadDim;
        k_proj = Layers.Linear(config.HiddenSize, config.HiddenSize);
        v_proj = Layers.Linear(config.HiddenSize, config.HiddenSize);
        q_proj = Layers.Linear(config.HiddenSize, config.HiddenSize);
        out_proj = Layers.Linear(config.HiddenSize, config.HiddenSize);
        RegisterComponents();
    }

    /// <param name="hidden_states">[B, L, hidden]</param>
    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = torch.NewDisposeScope();
        long b = hidden_states.shape[0], l = hidden_states.shape[1];
        Tensor Heads(Tensor x) => x.view(b, l, _heads, _headDim).transpose(1, 2);
        var q = Heads(q_proj.forward(hidden_states));
        var k = Heads(k_proj.forward(hidden_states));
        var v = Heads(v_proj.forward(hidden_states));
        var attn = nn.functional.scaled_dot_product_attention(q, k, v, null, 0.0, true);
        var merged = attn.transpose(1, 2).reshape(b, l, _heads * _headDim);
        return out_proj.forward(merged).MoveToOuterDisposeScope();
    }
}
