using DreamBooth.Models.Clip;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Text;

/// <summary>Turns token ids from <see cref="ClipTokenizer.Tokenize"/> into text-encoder hidden states, chunk by chunk.</summary>
public static class PromptEncoder
{
    public const int ChunkLength = 77;

    /// <summary>
    /// Splits ids [B, 77·k] into k chunks of 77 (the last may be shorter when padding is off), encodes each
    /// with clip skip <paramref name="clipSkip"/>, and concatenates along the sequence → [B, L, hidden].
    /// </summary>
    public static Tensor EncodePrompts(CLIPTextModel te, Tensor ids, int clipSkip)
    {
        ArgumentNullException.ThrowIfNull(te);
        ArgumentNullException.ThrowIfNull(ids);
        if (ids.dim() != 2) throw new ArgumentException($"ids: expected [B, L], got [{string.Join(", ", ids.shape)}]", nameof(ids));
        using var scope = torch.NewDisposeScope();
        long length = ids.shape[1];
        if (length <= ChunkLength) return te.Encode(ids, clipSkip).MoveToOuterDisposeScope();
        var parts = new List<Tensor>();
        for (long start = 0; start < length; start += ChunkLength)
        {
            long end = Math.Min(length, start + ChunkLength);
            parts.Add(te.Encode(ids[.., (int)start..(int)end], clipSkip));
        }
        return torch.cat(parts, 1).MoveToOuterDisposeScope();
    }
}
