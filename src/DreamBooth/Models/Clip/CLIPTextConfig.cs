using System.Text.Json;
using System.Text.Json.Serialization;

namespace DreamBooth.Models.Clip;

/// <summary>
/// transformers' <c>CLIPTextConfig</c>: the <c>text_encoder/config.json</c> of a diffusers folder, round-tripped
/// with the same keys (keys this record does not model are kept in <see cref="Extra"/> and written back).
/// </summary>
public sealed record CLIPTextConfig
{
    [JsonPropertyName("vocab_size")] public int VocabSize { get; init; } = 49408;
    [JsonPropertyName("hidden_size")] public int HiddenSize { get; init; } = 768;
    [JsonPropertyName("intermediate_size")] public int IntermediateSize { get; init; } = 3072;
    [JsonPropertyName("num_hidden_layers")] public int NumHiddenLayers { get; init; } = 12;
    [JsonPropertyName("num_attention_heads")] public int NumAttentionHeads { get; init; } = 12;
    [JsonPropertyName("max_position_embeddings")] public int MaxPositionEmbeddings { get; init; } = 77;
    [JsonPropertyName("hidden_act")] public string HiddenAct { get; init; } = "quick_gelu";
    [JsonPropertyName("layer_norm_eps")] public double LayerNormEps { get; init; } = 1e-5;
    [JsonPropertyName("projection_dim")] public int ProjectionDim { get; init; } = 768;
    [JsonPropertyName("attention_dropout")] public double AttentionDropout { get; init; }
    [JsonPropertyName("dropout")] public double Dropout { get; init; }
    [JsonPropertyName("initializer_range")] public double InitializerRange { get; init; } = 0.02;
    [JsonPropertyName("initializer_factor")] public double InitializerFactor { get; init; } = 1.0;
    [JsonPropertyName("bos_token_id")] public int BosTokenId { get; init; } = 0;
    [JsonPropertyName("eos_token_id")] public int EosTokenId { get; init; } = 2;
    [JsonPropertyName("pad_token_id")] public int PadTokenId { get; init; } = 1;

    /// <summary>Other keys of config.json (architectures, model_type, torch_dtype, transformers_version...).</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; init; }

    /// <summary>The text tower of OpenAI CLIP ViT-L/14, as in runwayml/stable-diffusion-v1-5 <c>text_encoder/config.json</c>.</summary>
    public static CLIPTextConfig StableDiffusion15 { get; } = new()
    {
        Extra = new Dictionary<string, JsonElement>
        {
            ["architectures"] = JsonSerializer.SerializeToElement(new[] { "CLIPTextModel" }),
            ["model_type"] = JsonSerializer.SerializeToElement("clip_text_model"),
            ["torch_dtype"] = JsonSerializer.SerializeToElement("float32"),
        },
    };

    /// <summary>A tiny config of the same architecture for tests: width 32, 2 layers, 4 heads, MLP 37, full vocabulary and 77 positions.</summary>
    public static CLIPTextConfig Tiny { get; } = new()
    {
        HiddenSize = 32,
        IntermediateSize = 37,
        NumHiddenLayers = 2,
        NumAttentionHeads = 4,
        ProjectionDim = 32,
    };

    public int HeadDim => HiddenSize / NumAttentionHeads;

    static readonly JsonSerializerOptions WriteOptions = new() { WriteIndented = true };

    public static CLIPTextConfig FromJson(string json, string source = "config.json")
    {
        CLIPTextConfig? c;
        try { c = JsonSerializer.Deserialize<CLIPTextConfig>(json); }
        catch (JsonException e) { throw new DreamBoothException($"{source}: not a valid CLIP text config ({e.Message})", e); }
        if (c is null) throw new DreamBoothException($"{source}: empty CLIP text config");
        c.Validate(source);
        return c;
    }

    public static CLIPTextConfig Load(string configJsonPath)
    {
        if (!File.Exists(configJsonPath)) throw new DreamBoothException($"{configJsonPath}: file not found (expected a CLIP text config.json)");
        return FromJson(File.ReadAllText(configJsonPath), configJsonPath);
    }

    public string ToJson() => JsonSerializer.Serialize(this, WriteOptions);

    public void Validate(string source = "config.json")
    {
        if (HiddenSize <= 0 || NumAttentionHeads <= 0 || HiddenSize % NumAttentionHeads != 0)
            throw new DreamBoothException($"{source}: hidden_size ({HiddenSize}) must be a positive multiple of num_attention_heads ({NumAttentionHeads})");
        if (NumHiddenLayers <= 0) throw new DreamBoothException($"{source}: num_hidden_layers must be > 0, found {NumHiddenLayers}");
        if (VocabSize <= 0 || MaxPositionEmbeddings <= 0 || IntermediateSize <= 0)
            throw new DreamBoothException($"{source}: vocab_size, max_position_embeddings and intermediate_size must be > 0");
        if (HiddenAct is not ("quick_gelu" or "gelu"))
            throw new DreamBoothException($"{source}: hidden_act: expected \"quick_gelu\" or \"gelu\", found \"{HiddenAct}\"");
    }

    public bool Equals(CLIPTextConfig? other) =>
        other is not null && VocabSize == other.VocabSize && HiddenSize == other.HiddenSize && IntermediateSize == other.IntermediateSize
        && NumHiddenLayers == other.NumHiddenLayers && NumAttentionHeads == other.NumAttentionHeads
        && MaxPositionEmbeddings == other.MaxPositionEmbeddings && HiddenAct == other.HiddenAct && LayerNormEps == other.LayerNormEps
        && ProjectionDim == other.ProjectionDim && AttentionDropout == other.AttentionDropout && Dropout == other.Dropout
        && InitializerRange == other.InitializerRange && InitializerFactor == other.InitializerFactor
        && BosTokenId == other.BosTokenId && EosTokenId == other.EosTokenId && PadTokenId == other.PadTokenId;

    public override int GetHashCode() => HashCode.Combine(VocabSize, HiddenSize, IntermediateSize, NumHiddenLayers, NumAttentionHeads, MaxPositionEmbeddings, HiddenAct);
}
