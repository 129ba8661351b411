using System.Text.Json;
using System.Text.Json.Serialization;

namespace DreamBooth.Models.Vae;

/// <summary>
/// diffusers <c>vae/config.json</c> for <see cref="AutoencoderKL"/>. Keys not modelled are kept and written back;
/// unsupported values are rejected by <see cref="Validate"/> with the key named.
/// </summary>
public sealed record AutoencoderKLConfig
{
    [JsonPropertyName("_class_name")] public string ClassName { get; init; } = "AutoencoderKL";
    [JsonPropertyName("_diffusers_version")] public string? DiffusersVersion { get; init; }
    [JsonPropertyName("act_fn")] public string ActFn { get; init; } = "silu";
    [JsonPropertyName("block_out_channels")] public IReadOnlyList<int> BlockOutChannels { get; init; } = [128, 256, 512, 512];
    [JsonPropertyName("down_block_types")] public IReadOnlyList<string> DownBlockTypes { get; init; } =
        ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"];
    [JsonPropertyName("in_channels")] public int InChannels { get; init; } = 3;
    [JsonPropertyName("latent_channels")] public int LatentChannels { get; init; } = 4;
    [JsonPropertyName("layers_per_block")] public int LayersPerBlock { get; init; } = 2;
    [JsonPropertyName("norm_num_groups")] public int NormNumGroups { get; init; } = 32;
    [JsonPropertyName("out_channels")] public int OutChannels { get; init; } = 3;
    [JsonPropertyName("sample_size")] public int SampleSize { get; init; } = 512;
    [JsonPropertyName("up_block_types")] public IReadOnlyList<string> UpBlockTypes { get; init; } =
        ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"];
    /// <summary>Latents for the UNet are <c>posterior.sample() · scaling_factor</c>; decode takes <c>latents / scaling_factor</c>.</summary>
    [JsonPropertyName("scaling_factor")] public double ScalingFactor { get; init; } = 0.18215;
    [JsonPropertyName("force_upcast")] public bool ForceUpcast { get; init; } = true;

    [JsonExtensionData] public Dictionary<string, JsonElement>? Extra { get; init; }

    /// <summary>runwayml/stable-diffusion-v1-5 <c>vae/config.json</c> (plus the scaling_factor newer diffusers writes).</summary>
    public static AutoencoderKLConfig StableDiffusion15 { get; } = new() { DiffusersVersion = "0.6.0" };

    /// <summary>A tiny config with the same code paths (2 blocks → 2× downsampling), for tests.</summary>
    public static AutoencoderKLConfig Tiny { get; } = new()
    {
        BlockOutChannels = [32, 64],
        DownBlockTypes = ["DownEncoderBlock2D", "DownEncoderBlock2D"],
        UpBlockTypes = ["UpDecoderBlock2D", "UpDecoderBlock2D"],
        LayersPerBlock = 1,
        LatentChannels = 4,
        NormNumGroups = 32,
        SampleSize = 32,
    };

    /// <summary>Pixels per latent along each axis: 2^(blocks − 1).</summary>
    [JsonIgnore] public int DownsampleFactor => 1 << (BlockOutChannels.Count - 1);

    public static AutoencoderKLConfig Load(string configJsonPath)
    {
        var config = ModelConfigJson.Load<AutoencoderKLConfig>(configJsonPath);
        config.Validate(configJsonPath);
        return config;
    }

    public static AutoencoderKLConfig Parse(string json, string source = "vae config.json")
    {
        var config = ModelConfigJson.Parse<AutoencoderKLConfig>(json, source);
        config.Validate(source);
        return config;
    }

    public string ToJson() => ModelConfigJson.ToJson(this);

    public void Validate(string source = "vae config.json")
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
        int n = BlockOutChannels.Count;
        Require(n >= 1, "block_out_channels", "expected at least one block");
        Require(DownBlockTypes.Count == n, "down_block_types", $"expected {n} entries (one per block_out_channels), found {DownBlockTypes.Count}");
        Require(UpBlockTypes.Count == n, "up_block_types", $"expected {n} entries (one per block_out_channels), found {UpBlockTypes.Count}");
        foreach (var t in DownBlockTypes) Require(t == "DownEncoderBlock2D", "down_block_types", $"'{t}' is not supported (DownEncoderBlock2D)");
        foreach (var t in UpBlockTypes) Require(t == "UpDecoderBlock2D", "up_block_types", $"'{t}' is not supported (UpDecoderBlock2D)");
        Require(ActFn == "silu", "act_fn", $"'{ActFn}' is not supported (silu)");
        Require(LayersPerBlock >= 1, "layers_per_block", $"expected ≥ 1, found {LayersPerBlock}");
        Require(LatentChannels >= 1, "latent_channels", $"expected ≥ 1, found {LatentChannels}");
        Require(InChannels >= 1 && OutChannels >= 1, "in_channels", "in_channels and out_channels must be ≥ 1");
        Require(ScalingFactor > 0 && double.IsFinite(ScalingFactor), "scaling_factor", $"expected a positive number, found {ScalingFactor}");
        Require(SampleSize >= DownsampleFactor, "sample_size", $"expected ≥ {DownsampleFactor}, found {SampleSize}");
        foreach (var ch in BlockOutChannels)
            Require(NormNumGroups >= 1 && ch % NormNumGroups == 0, "block_out_channels", $"{ch} is not divisible by norm_num_groups {NormNumGroups}");
        if (Extra is not null && Extra.TryGetValue("mid_block_add_attention", out var ma))
            Require(ma.ValueKind is JsonValueKind.Null or JsonValueKind.True, "mid_block_add_attention", $"{ma.GetRawText()} is not supported (true)");
        if (Extra is not null && Extra.TryGetValue("use_quant_conv", out var uq))
            Require(uq.ValueKind is JsonValueKind.Null or JsonValueKind.True, "use_quant_conv", $"{uq.GetRawText()} is not supported (true)");
        if (Extra is not null && Extra.TryGetValue("use_post_quant_conv", out var upq))
            Require(upq.ValueKind is JsonValueKind.Null or JsonValueKind.True, "use_post_quant_conv", $"{upq.GetRawText()} is not supported (true)");
        if (Extra is not null && Extra.TryGetValue("shift_factor", out var sf))
            Require(sf.ValueKind == JsonValueKind.Null || (sf.ValueKind == JsonValueKind.Number && sf.GetDouble() == 0), "shift_factor", $"{sf.GetRawText()} is not supported (null)");
    }
}
