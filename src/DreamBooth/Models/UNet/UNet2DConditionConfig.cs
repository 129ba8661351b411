using System.Text.Json;
using System.Text.Json.Serialization;

namespace DreamBooth.Models.UNet;

/// <summary>
/// diffusers <c>unet/config.json</c> for <see cref="UNet2DConditionModel"/>. Keys are diffusers' own, so a diffusers
/// folder loads unchanged; keys this port does not model are kept (and written back) as they were, and keys that
/// would change the architecture to something not supported are rejected by <see cref="Validate"/>.
/// The prediction type is not here: it belongs to the scheduler config.
/// </summary>
public sealed record UNet2DConditionConfig
{
    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = "UNet2DConditionModel";
    [JsonPropertyName("_diffusers_version")] public string? DiffusersVersion { get; init; }
    [JsonPropertyName("sample_size")] public int SampleSize { get; init; } = 64;
    [JsonPropertyName("in_channels")] public int InChannels { get; init; } = 4;
    [JsonPropertyName("out_channels")] public int OutChannels { get; init; } = 4;
    [JsonPropertyName("center_input_sample")] public bool CenterInputSample { get; init; }
    [JsonPropertyName("flip_sin_to_cos")] public bool FlipSinToCos { get; init; } = true;
    [JsonPropertyName("freq_shift")] public double FreqShift { get; init; }
    [JsonPropertyName("down_block_types")] public IReadOnlyList<string> DownBlockTypes { get; init; } =
        ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"];
    [JsonPropertyName("mid_block_type")] public string? MidBlockType { get; init; } = "UNetMidBlock2DCrossAttn";
    [JsonPropertyName("up_block_types")] public IReadOnlyList<string> UpBlockTypes { get; init; } =
        ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"];
    [JsonPropertyName("only_cross_attention")] public bool OnlyCrossAttention { get; init; }
    [JsonPropertyName("block_out_channels")] public IReadOnlyList<int> BlockOutChannels { get; init; } = [320, 640, 1280, 1280];
    [JsonPropertyName("layers_per_block")] public int LayersPerBlock { get; init; } = 2;
    [JsonPropertyName("downsample_padding")] public int DownsamplePadding { get; init; } = 1;
    [JsonPropertyName("mid_block_scale_factor")] public double MidBlockScaleFactor { get; init; } = 1.0;
    [JsonPropertyName("dropout")] public double Dropout { get; init; }
    [JsonPropertyName("act_fn")] public string ActFn { get; init; } = "silu";
    [JsonPropertyName("norm_num_groups")] public int NormNumGroups { get; init; } = 32;
    [JsonPropertyName("norm_eps")] public double NormEps { get; init; } = 1e-5;
    [JsonPropertyName("cross_attention_dim")] public int CrossAttentionDim { get; init; } = 768;
    /// <summary>In SD1.x/2.x configs this is (historically) the number of heads per block, one int or one per block.</summary>
    [JsonPropertyName("attention_head_dim")] public PerBlockInt AttentionHeadDim { get; init; } = 8;
    [JsonPropertyName("num_attention_heads")] public PerBlockInt? NumAttentionHeads { get; init; }
    [JsonPropertyName("transformer_layers_per_block")] public PerBlockInt TransformerLayersPerBlock { get; init; } = 1;
    [JsonPropertyName("use_linear_projection")] public bool UseLinearProjection { get; init; }
    [JsonPropertyName("upcast_attention")] public bool UpcastAttention { get; init; }
    [JsonPropertyName("dual_cross_attention")] public bool DualCrossAttention { get; init; }
    [JsonPropertyName("resnet_time_scale_shift")] public string ResnetTimeScaleShift { get; init; } = "default";
    [JsonPropertyName("time_embedding_type")] public string TimeEmbeddingType { get; init; } = "positional";
    [JsonPropertyName("conv_in_kernel")] public int ConvInKernel { get; init; } = 3;
    [JsonPropertyName("conv_out_kernel")] public int ConvOutKernel { get; init; } = 3;

    /// <summary>Keys not modelled above, kept as read so that <see cref="ToJson"/> writes them back.</summary>
    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; init; }

    /// <summary>runwayml/stable-diffusion-v1-5 <c>unet/config.json</c>.</summary>
    public static UNet2DConditionConfig StableDiffusion15 { get; } = new() { DiffusersVersion = "0.6.0" };

    /// <summary>A tiny config with the same code paths (2 blocks, 1 layer each, 32-dim cross-attention), for tests.</summary>
    public static UNet2DConditionConfig Tiny { get; } = new()
    {
        SampleSize = 8,
        BlockOutChannels = [32, 64],
        LayersPerBlock = 1,
        CrossAttentionDim = 32,
        AttentionHeadDim = 8,
        NormNumGroups = 32,
        DownBlockTypes = ["CrossAttnDownBlock2D", "DownBlock2D"],
        UpBlockTypes = ["UpBlock2D", "CrossAttnUpBlock2D"],
    };

    /// <summary>Latent downsampling of the UNet: 2^(blocks − 1).</summary>
    [JsonIgnore] public int DownsampleFactor => 1 << (BlockOutChannels.Count - 1);

    public static UNet2DConditionConfig Load(string configJsonPath)
    {
        var config = ModelConfigJson.Load<UNet2DConditionConfig>(configJsonPath);
        config.Validate(configJsonPath);
        return config;
    }

    public static UNet2DConditionConfig Parse(string json, string source = "unet config.json")
    {
        var config = ModelConfigJson.Parse<UNet2DConditionConfig>(json, source);
        config.Validate(source);
        return config;
    }

    public string ToJson() => ModelConfigJson.ToJson(this);

    /// <summary>Number of heads of block <paramref name="index"/> (diffusers: num_attention_heads or, in SD1.x/2.x configs, attention_head_dim).</summary>
    public int HeadsFor(int index) => AttentionHeadDim.For(index, BlockOutChannels.Count, "attention_head_dim");

    // Unmodelled diffusers keys that change the network when set; only their neutral value is accepted.
    static readonly string[] NullOnlyKeys =
    [
        "encoder_hid_dim", "encoder_hid_dim_type", "class_embed_type", "addition_embed_type", "addition_time_embed_dim",
        "num_class_embeds", "time_embedding_dim", "time_embedding_act_fn", "timestep_post_act", "time_cond_proj_dim",
        "projection_class_embeddings_input_dim", "cross_attention_norm", "reverse_transformer_layers_per_block",
    ];

    /// <summary>Throws a <see cref="DreamBoothException"/> naming the key for every value this port does not support.</summary>
    public void Validate(string source = "unet config.json")
    {
        void Require(bool ok, string key, string what)
        {
            if (!ok) throw new DreamBoothException($"{source}: config key '{key}': {what}");
        }
        // JSON null deserializes into these non-nullable members: refuse it before anything dereferences them
        static bool Present(object? value) => value is not null;
        Require(Present(BlockOutChannels), "block_out_channels", "expected a list, found null");
        Require(Present(DownBlockTypes), "down_block_types", "expected a list, found null");
        Require(Present(UpBlockTypes), "up_block_types", "expected a list, found null");
        Require(Present(AttentionHeadDim), "attention_head_dim", "expected a number or a list, found null");
        Require(Present(TransformerLayersPerBlock), "transformer_layers_per_block", "expected a number or a list, found null");
        int n = BlockOutChannels.Count;
        Require(n >= 1, "block_out_channels", "expected at least one block");
        Require(DownBlockTypes.Count == n, "down_block_types", $"expected {n} entries (one per block_out_channels), found {DownBlockTypes.Count}");
        Require(UpBlockTypes.Count == n, "up_block_types", $"expected {n} entries (one per block_out_channels), found {UpBlockTypes.Count}");
        foreach (var t in DownBlockTypes)
            Require(t is "CrossAttnDownBlock2D" or "DownBlock2D", "down_block_types", $"'{t}' is not supported (CrossAttnDownBlock2D, DownBlock2D)");
        foreach (var t in UpBlockTypes)
            Require(t is "CrossAttnUpBlock2D" or "UpBlock2D", "up_block_types", $"'{t}' is not supported (CrossAttnUpBlock2D, UpBlock2D)");
        Require(MidBlockType is "UNetMidBlock2DCrossAttn", "mid_block_type", $"'{MidBlockType ?? "null"}' is not supported (UNetMidBlock2DCrossAttn)");
        Require(ActFn == "silu", "act_fn", $"'{ActFn}' is not supported (silu)");
        Require(!OnlyCrossAttention, "only_cross_attention", "true is not supported (false)");
        Require(!DualCrossAttention, "dual_cross_attention", "true is not supported (false)");
        Require(ResnetTimeScaleShift == "default", "resnet_time_scale_shift", $"'{ResnetTimeScaleShift}' is not supported (default)");
        Require(TimeEmbeddingType == "positional", "time_embedding_type", $"'{TimeEmbeddingType}' is not supported (positional)");
        Require(ConvInKernel == 3, "conv_in_kernel", $"{ConvInKernel} is not supported (3)");
        Require(ConvOutKernel == 3, "conv_out_kernel", $"{ConvOutKernel} is not supported (3)");
        Require(NumAttentionHeads is null, "num_attention_heads", "must be null for UNet2DConditionModel (diffusers reads heads from attention_head_dim)");
        Require(TransformerLayersPerBlock.Values.All(v => v == 1), "transformer_layers_per_block", $"{TransformerLayersPerBlock} is not supported (1)");
        Require(LayersPerBlock >= 1, "layers_per_block", $"expected ≥ 1, found {LayersPerBlock}");
        Require(NormNumGroups >= 1, "norm_num_groups", $"expected ≥ 1, found {NormNumGroups}");
        Require(InChannels >= 1 && OutChannels >= 1, "in_channels", "in_channels and out_channels must be ≥ 1");
        Require(CrossAttentionDim >= 1, "cross_attention_dim", $"expected ≥ 1, found {CrossAttentionDim}");
        Require(DownsamplePadding is 0 or 1, "downsample_padding", $"{DownsamplePadding} is not supported (0 or 1)");
        for (int i = 0; i < n; i++)
        {
            int ch = BlockOutChannels[i];
            Require(ch % NormNumGroups == 0, "block_out_channels", $"{ch} is not divisible by norm_num_groups {NormNumGroups}");
            int heads = HeadsFor(i);
            Require(heads >= 1 && ch % heads == 0, "attention_head_dim", $"{heads} heads do not divide block {i}'s {ch} channels");
        }
        if (Extra is not null)
            foreach (var key in NullOnlyKeys)
                if (Extra.TryGetValue(key, out var v))
                    Require(v.ValueKind == JsonValueKind.Null, key, $"{v.GetRawText()} is not supported (null)");
        if (Extra is not null && Extra.TryGetValue("attention_type", out var at))
            Require(at.ValueKind == JsonValueKind.Null || at.GetString() == "default", "attention_type", $"{at.GetRawText()} is not supported (default)");
        if (Extra is not null && Extra.TryGetValue("mid_block_only_cross_attention", out var mo))
            Require(mo.ValueKind is JsonValueKind.Null or JsonValueKind.False, "mid_block_only_cross_attention", $"{mo.GetRawText()} is not supported (false)");
        if (Extra is not null && Extra.TryGetValue("class_embeddings_concat", out var ce))
            Require(ce.ValueKind is JsonValueKind.Null or JsonValueKind.False, "class_embeddings_concat", $"{ce.GetRawText()} is not supported (false)");
        if (Extra is not null && Extra.TryGetValue("resnet_skip_time_act", out var st))
            Require(st.ValueKind is JsonValueKind.Null or JsonValueKind.False, "resnet_skip_time_act", $"{st.GetRawText()} is not supported (false)");
        if (Extra is not null && Extra.TryGetValue("resnet_out_scale_factor", out var rs))
            Require(rs.ValueKind == JsonValueKind.Null || (rs.ValueKind == JsonValueKind.Number && rs.GetDouble() == 1.0), "resnet_out_scale_factor", $"{rs.GetRawText()} is not supported (1.0)");
    }
}
