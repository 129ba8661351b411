using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>
/// transformers' <c>CLIPTextModel</c> (the SD1.x text encoder). State-dict keys are transformers' and
/// diffusers' (<c>text_model.embeddings.token_embedding.weight</c>, ...). Built on CPU in fp32; move with <c>.to()</c>.
/// </summary>
public sealed class CLIPTextModel : nn.Module<Tensor, Tensor>
{
    private readonly CLIPTextTransformer text_model;

    public CLIPTextConfig Config { get; }

    /// <summary>
    /// Keys that checkpoints may carry but this model does not have: transformers before 4.31 saved the
    /// <c>position_ids</c> buffer (many SD1.x files, single-file and diffusers). Loaders drop exactly these.
    /// </summary>
    public static IReadOnlySet<string> LegacyKeys { get; } = new HashSet<string>(StringComparer.Ordinal)
    {
        "text_model.embeddings.position_ids",
    };

    public CLIPTextModel(CLIPTextConfig config) : base(nameof(CLIPTextModel))
    {
        config.Validate();
        Config = config;
        text_model = new CLIPTextTransformer(config);
        RegisterComponents();
    }

    /// <summary>The last hidden state after final_layer_norm, [B, L, hidden] for int64 ids [B, L ≤ 77].</summary>
    public override Tensor forward(Tensor inputIds) => text_model.Encode(inputIds, 1);

    /// <summary>Clip skip N (1 = normal output): hidden state of layer −N passed through final_layer_norm.</summary>
    public Tensor Encode(Tensor inputIds, int clipSkip = 1) => text_model.Encode(inputIds, clipSkip);

    /// <summary>transformers' <c>hidden_states[index]</c> (0 = embeddings, i = after layer i), without the final layer norm.</summary>
    public Tensor HiddenState(Tensor inputIds, int index) => text_model.HiddenState(inputIds, index);

    /// <summary>Applies the model's final_layer_norm (what clip skip does to an intermediate hidden state).</summary>
    public Tensor FinalLayerNorm(Tensor hiddenState)
    {
        using var scope = torch.NewDisposeScope();
        return text_model.FinalLayerNorm(hiddenState).MoveToOuterDisposeScope();
    }
}
