using System.Text.Json;
using DreamBooth.Models;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Models;

public class ModelConfigTests
{
    // runwayml/stable-diffusion-v1-5 unet/config.json as published
    const string SD15UNetJson = """
    {
      "_class_name": "UNet2DConditionModel",
      "_diffusers_version": "0.6.0",
      "act_fn": "silu",
      "attention_head_dim": 8,
      "block_out_channels": [320, 640, 1280, 1280],
      "center_input_sample": false,
      "cross_attention_dim": 768,
      "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
      "downsample_padding": 1,
      "flip_sin_to_cos": true,
      "freq_shift": 0,
      "in_channels": 4,
      "layers_per_block": 2,
      "mid_block_scale_factor": 1,
      "norm_eps": 1e-05,
      "norm_num_groups": 32,
      "out_channels": 4,
      "sample_size": 64,
      "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
    }
    """;

    // runwayml/stable-diffusion-v1-5 vae/config.json as published
    const string SD15VaeJson = """
    {
      "_class_name": "AutoencoderKL",
      "_diffusers_version": "0.6.0",
      "act_fn": "silu",
      "block_out_channels": [128, 256, 512, 512],
      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
      "in_channels": 3,
      "latent_channels": 4,
      "layers_per_block": 2,
      "norm_num_groups": 32,
      "out_channels": 3,
      "sample_size": 512,
      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]
    }
    """;

    /// <summary>Every key of <paramref name="original"/> is in <paramref name="written"/> with an equal value (numbers by value).</summary>
    static void AssertContainsSameValues(string original, string written)
    {
        using var a = JsonDocument.Parse(original);
        using var b = JsonDocument.Parse(written);
        foreach (var p in a.RootElement.EnumerateObject())
        {
            Assert.True(b.RootElement.TryGetProperty(p.Name, out var v), $"key {p.Name} was dropped");
            Assert.True(JsonEqual(p.Value, v), $"key {p.Name}: {p.Value.GetRawText()} became {v.GetRawText()}");
        }
    }

    static bool JsonEqual(JsonElement x, JsonElement y) => x.ValueKind switch
    {
        JsonValueKind.Number => y.ValueKind == JsonValueKind.Number && x.GetDouble() == y.GetDouble(),
        JsonValueKind.Array => y.ValueKind == JsonValueKind.Array && x.GetArrayLength() == y.GetArrayLength()
            && x.EnumerateArray().Zip(y.EnumerateArray()).All(p => JsonEqual(p.First, p.Second)),
        JsonValueKind.Object => y.ValueKind == JsonValueKind.Object && x.EnumerateObject().All(p => y.TryGetProperty(p.Name, out var v) && JsonEqual(p.Value, v)),
        _ => x.GetRawText() == y.GetRawText(),
    };

    [Fact]
    public void SD15_unet_config_json_round_trips_and_equals_the_built_in_one()
    {
        var config = UNet2DConditionConfig.Parse(SD15UNetJson);
        Assert.Equal(new[] { 320, 640, 1280, 1280 }, config.BlockOutChannels);
        Assert.Equal(8, config.HeadsFor(2));
        Assert.False(config.AttentionHeadDim.IsList);
        Assert.Equal(768, config.CrossAttentionDim);
        Assert.True(config.FlipSinToCos);
        Assert.Equal(1e-5, config.NormEps);
        Assert.Equal(8, config.DownsampleFactor);
        var json = config.ToJson();
        AssertContainsSameValues(SD15UNetJson, json);
        Assert.Equal(json, UNet2DConditionConfig.Parse(json).ToJson());
        Assert.Equal(UNet2DConditionConfig.StableDiffusion15.ToJson(), json);
    }

    [Fact]
    public void SD2_style_unet_config_keeps_per_block_heads_and_unknown_keys()
    {
        var json = SD15UNetJson.Replace("\"attention_head_dim\": 8", "\"attention_head_dim\": [5, 10, 20, 20], \"use_linear_projection\": true, \"upcast_attention\": true, \"num_class_embeds\": null, \"some_future_key\": {\"a\": [1, 2]}")
            .Replace("\"cross_attention_dim\": 768", "\"cross_attention_dim\": 1024");
        var config = UNet2DConditionConfig.Parse(json);
        Assert.True(config.AttentionHeadDim.IsList);
        Assert.Equal(20, config.HeadsFor(3));
        Assert.True(config.UseLinearProjection);
        Assert.True(config.UpcastAttention);
        AssertContainsSameValues(json, config.ToJson());
    }

    [Theory]
    [InlineData("\"act_fn\": \"silu\"", "\"act_fn\": \"gelu\"", "act_fn")]
    [InlineData("\"down_block_types\": [", "\"only_cross_attention\": true, \"down_block_types\": [", "only_cross_attention")]
    [InlineData("\"attention_head_dim\": 8", "\"attention_head_dim\": [8, 8]", "attention_head_dim")]
    [InlineData("\"attention_head_dim\": 8", "\"attention_head_dim\": 7", "attention_head_dim")]
    [InlineData("\"DownBlock2D\"]", "\"AttnDownBlock2D\"]", "down_block_types")]
    [InlineData("\"in_channels\": 4", "\"in_channels\": 4, \"class_embed_type\": \"timestep\"", "class_embed_type")]
    [InlineData("\"in_channels\": 4", "\"in_channels\": 4, \"addition_embed_type\": \"text_time\"", "addition_embed_type")]
    [InlineData("\"in_channels\": 4", "\"in_channels\": 4, \"transformer_layers_per_block\": 2", "transformer_layers_per_block")]
    [InlineData("\"in_channels\": 4", "\"in_channels\": 4, \"mid_block_type\": \"UNetMidBlock2DSimpleCrossAttn\"", "mid_block_type")]
    [InlineData("\"layers_per_block\": 2", "\"layers_per_block\": \"two\"", "layers_per_block")]
    public void Unsupported_unet_config_values_are_rejected_naming_the_key(string find, string replace, string key)
    {
        var json = SD15UNetJson.Replace(find, replace);
        Assert.NotEqual(SD15UNetJson, json);
        var e = Assert.Throws<DreamBoothException>(() => UNet2DConditionConfig.Parse(json));
        Assert.Contains(key, e.Message);
        Assert.DoesNotContain('\n', e.Message);
    }

    [Fact]
    public void SD15_vae_config_json_round_trips_with_scaling_factor()
    {
        var config = AutoencoderKLConfig.Parse(SD15VaeJson);
        Assert.Equal(0.18215, config.ScalingFactor);
        Assert.Equal(8, config.DownsampleFactor);
        Assert.Equal(4, config.LatentChannels);
        var json = config.ToJson();
        AssertContainsSameValues(SD15VaeJson, json);
        Assert.Contains("\"scaling_factor\": 0.18215", json);
        Assert.Equal(json, AutoencoderKLConfig.Parse(json).ToJson());
        Assert.Equal(AutoencoderKLConfig.StableDiffusion15.ToJson(), json);
        var sdxlLike = AutoencoderKLConfig.Parse(SD15VaeJson.Replace("\"in_channels\": 3", "\"in_channels\": 3, \"scaling_factor\": 0.13025"));
        Assert.Equal(0.13025, sdxlLike.ScalingFactor);
    }

    [Theory]
    [InlineData("\"DownEncoderBlock2D\"]", "\"SomethingElse\"]", "down_block_types")]
    [InlineData("\"in_channels\": 3", "\"in_channels\": 3, \"scaling_factor\": -1", "scaling_factor")]
    [InlineData("\"in_channels\": 3", "\"in_channels\": 3, \"use_quant_conv\": false", "use_quant_conv")]
    [InlineData("\"norm_num_groups\": 32", "\"norm_num_groups\": 48", "norm_num_groups")]
    public void Unsupported_vae_config_values_are_rejected_naming_the_key(string find, string replace, string key)
    {
        var json = SD15VaeJson.Replace(find, replace);
        Assert.NotEqual(SD15VaeJson, json);
        var e = Assert.Throws<DreamBoothException>(() => AutoencoderKLConfig.Parse(json));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void Load_reads_config_files_and_reports_missing_ones()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("unet.json"), UNet2DConditionConfig.Tiny.ToJson());
        File.WriteAllText(dir.File("vae.json"), AutoencoderKLConfig.Tiny.ToJson());
        Assert.Equal(UNet2DConditionConfig.Tiny.ToJson(), UNet2DConditionConfig.Load(dir.File("unet.json")).ToJson());
        Assert.Equal(new[] { 32, 64 }, AutoencoderKLConfig.Load(dir.File("vae.json")).BlockOutChannels);
        var e = Assert.Throws<DreamBoothException>(() => UNet2DConditionConfig.Load(dir.File("missing.json")));
        Assert.Contains("missing.json", e.Message);
    }
}
