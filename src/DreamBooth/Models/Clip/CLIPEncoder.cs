using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>The stack of <see cref="CLIPEncoderLayer"/>s (<c>layers.{i}</c>).</summary>
public sealed class CLIPEncoder : nn.Module<Tensor, Tensor>
{
    private readonly ModuleList<CLIPEncoderLayer> layers;

    public CLIPEncoder(CLIPTextConfig config) : base(nameof(CLIPEncoder))
    {
        layers = new ModuleList<CLIPEncoderLayer>();
        for (int i = 0; i < config.NumHiddenLayers; i++) layers.Add(new CLIPEncoderLayer(config));
        RegisterComponents();
    }

    public int LayerCount => layers.Count;

    /// <summary>All layers: the input of final_layer_norm.</summary>
    public override Tensor forward(Tensor inputs_embeds) => Forward(inputs_embeds, layers.Count);

    /// <summary>Runs the first <paramref name="layerCount"/> layers: the hidden state <c>hidden_states[layerCount]</c> in transformers' numbering.</summary>
    public Tensor Forward(Tensor inputs_embeds, int layerCount)
    {
        if (layerCount < 0 || layerCount > layers.Count)
            throw new ArgumentOutOfRangeException(nameof(layerCount), layerCount, $"expected 0..{layers.Count}");
        using var scope = torch.NewDisposeScope();
        var h = inputs_embeds;
        for (int i = 0; i < layerCount; i++) h = layers[i].forward(h);
        return h.MoveToOuterDisposeScope();
    }
}
