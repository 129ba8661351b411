using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>embeddings → encoder (causal) → final_layer_norm, with clip skip.</summary>
public sealed class CLIPTextTransformer : nn.Module<Tensor, Tensor>
{
    private readonly CLIPTextEmbeddings embeddings;
    private readonly CLIPEncoder encoder;
    private readonly LayerNorm final_layer_norm;

    public CLIPTextTransformer(CLIPTextConfig config) : base(nameof(CLIPTextTransformer))
    {
        embeddings = new CLIPTextEmbeddings(config);
        encoder = new CLIPEncoder(config);
        final_layer_norm = Layers.LayerNorm(config.HiddenSize, eps: config.LayerNormEps);
        RegisterComponents();
    }

    public override Tensor forward(Tensor input_ids) => Encode(input_ids, 1);

    /// <summary>Clip skip N: the hidden state of layer −N (N=1 is the last layer) through final_layer_norm.</summary>
    public Tensor Encode(Tensor input_ids, int clipSkip)
    {
        if (clipSkip < 1 || clipSkip > encoder.LayerCount)
            throw new DreamBoothException($"clip_skip: expected 1..{encoder.LayerCount}, found {clipSkip}");
        using var scope = torch.NewDisposeScope();
        var h = embeddings.forward(input_ids);
        h = encoder.Forward(h, encoder.LayerCount - (clipSkip - 1));
        return final_layer_norm.forward(h).MoveToOuterDisposeScope();
    }

    /// <summary>Hidden states before the final layer norm: index 0 = embeddings, i = after layer i (transformers' <c>hidden_states</c>).</summary>
    public Tensor HiddenState(Tensor input_ids, int index)
    {
        using var scope = torch.NewDisposeScope();
        var h = encoder.Forward(embeddings.forward(input_ids), index);
        return h.MoveToOuterDisposeScope();
    }

    internal Tensor FinalLayerNorm(Tensor h) => final_layer_norm.forward(h);
}
