using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>Pre-norm transformer block: x + self_attn(layer_norm1(x)), then x + mlp(layer_norm2(x)).</summary>
public sealed class CLIPEncoderLayer : nn.Module<Tensor, Tensor>
{
    private readonly CLIPAttention self_attn;
    private readonly LayerNorm layer_norm1;
    private readonly CLIPMLP mlp;
    private readonly LayerNorm layer_norm2;

    public CLIPEncoderLayer(CLIPTextConfig config) : base(nameof(CLIPEncoderLayer))
    {
        self_attn = new CLIPAttention(config);
        layer_norm1 = Layers.LayerNorm(config.HiddenSize, eps: config.LayerNormEps);
        mlp = new CLIPMLP(config);
        layer_norm2 = Layers.LayerNorm(config.HiddenSize, eps: config.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = torch.NewDisposeScope();
        var h = hidden_states + self_attn.forward(layer_norm1.forward(hidden_states));
        h = h + mlp.forward(layer_norm2.forward(h));
        return h.MoveToOuterDisposeScope();
    }
}
