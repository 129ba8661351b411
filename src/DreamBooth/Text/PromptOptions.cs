namespace DreamBooth.Text;

/// <summary>
/// How captions become token ids, with the A1111 Dreambooth extension's names and defaults.
/// <list type="bullet">
/// <item><see cref="PadTokens"/>: pad every row to 77·k (on) or only to the longest row of the batch (off); the pad id is EOS.</item>
/// <item><see cref="StrictTokens"/>: each phrase (split at <c>[,;.!?]</c> + whitespace) becomes its own BOS…EOS segment.</item>
/// <item><see cref="ShuffleTags"/>: comma-separated tags are shuffled, the first tag stays first.</item>
/// <item><see cref="MaxTokenLength"/>: 75, 150 or 225 tokens; past 75 the prompt is cut into 75-token chunks, each wrapped
/// BOS…EOS and padded to 77 (as A1111/kohya), and encoded chunk by chunk. Tokens past the limit are dropped.</item>
/// </list>
/// </summary>
public sealed record PromptOptions
{
    /// <summary>Tokens per chunk between BOS and EOS.</summary>
    public const int ChunkTokens = 75;

    public bool PadTokens { get; init; } = true;
    public bool StrictTokens { get; init; }
    public bool ShuffleTags { get; init; } = true;
    public int MaxTokenLength { get; init; } = ChunkTokens;

    /// <summary>Training defaults: pad, no strict tokens, shuffle tags, 75 tokens.</summary>
    public static PromptOptions Default { get; } = new();

    /// <summary>Inference: as <see cref="Default"/> but tags stay in the order written.</summary>
    public static PromptOptions Inference { get; } = new() { ShuffleTags = false };

    /// <summary>Number of 77-position chunks a padded row has.</summary>
    public int ChunkCount => MaxTokenLength / ChunkTokens;

    public void Validate()
    {
        if (MaxTokenLength is not (75 or 150 or 225))
            throw new DreamBoothException($"max_token_length: expected 75, 150 or 225, found {MaxTokenLength}");
    }
}
