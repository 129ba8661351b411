using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>Token + learned absolute position embeddings. <c>position_ids</c> is a non-persistent buffer (not in state dicts).</summary>
public sealed class CLIPTextEmbeddings : nn.Module<Tensor, Tensor>
{
    private readonly Embedding token_embedding;
    private readonly Embedding position_embedding;
    private readonly Tensor position_ids;

    public CLIPTextEmbeddings(CLIPTextConfig config) : base(nameof(CLIPTextEmbeddings))
    {
        token_embedding = Layers.Embedding(config.VocabSize, config.HiddenSize);
        position_embedding = Layers.Embedding(config.MaxPositionEmbeddings, config.HiddenSize);
        position_ids = torch.arange(config.MaxPositionEmbeddings, dtype: ScalarType.Int64).unsqueeze(0).DetachFromDisposeScope();
        // Registered first as non-persistent (transformers ≥ 4.31 does not save it); RegisterComponents then skips it.
        // TorchSharp 0.107's Module.to() and Dispose() pass over non-persistent buffers, so forward() follows the
        // input's device and Dispose() frees it here.
        register_buffer(nameof(position_ids), position_ids, persistent: false);
        RegisterComponents();
    }

    /// <param name="input_ids">[B, L] int64, L ≤ max_position_embeddings.</param>
    public override Tensor forward(Tensor input_ids)
    {
        using var scope = torch.NewDisposeScope();
        long length = input_ids.shape[^1];
        if (length > position_ids.shape[1])
            throw new ArgumentException($"sequence length {length} exceeds max_position_embeddings {position_ids.shape[1]}; split longer prompts into 77-token chunks (PromptEncoder)");
        var ids = position_ids.device == input_ids.device ? position_ids : position_ids.to(input_ids.device);
        var positions = ids[.., ..(int)length];
        var result = token_embedding.forward(input_ids) + position_embedding.forward(positions);
        return result.MoveToOuterDisposeScope();
    }

    protected override void Dispose(bool disposing)
    {
        if (disposing && !position_ids.IsInvalid) position_ids.Dispose();
        base.Dispose(disposing);
    }
}
