using System.Text.Json;
using DreamBooth.Models.Clip;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Models.Clip;

public class CLIPTextConfigTests
{
    // text_encoder/config.json as diffusers' SD1.5 folders carry it (written by transformers).
    const string Sd15Json = """
    {
      "_name_or_path": "openai/clip-vit-large-patch14",
      "architectures": ["CLIPTextModel"],
      "attention_dropout": 0.0,
      "bos_token_id": 0,
      "dropout": 0.0,
      "eos_token_id": 2,
      "hidden_act": "quick_gelu",
      "hidden_size": 768,
      "initializer_factor": 1.0,
      "initializer_range": 0.02,
      "intermediate_size": 3072,
      "layer_norm_eps": 1e-05,
      "max_position_embeddings": 77,
      "model_type": "clip_text_model",
      "num_attention_heads": 12,
      "num_hidden_layers": 12,
      "pad_token_id": 1,
      "projection_dim": 768,
      "torch_dtype": "float32",
      "transformers_version": "4.22.0.dev0",
      "vocab_size": 49408
    }
    """;

    [Fact]
    public void Sd15_config_json_loads_to_the_built_in_values_and_keeps_unknown_keys()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("config.json"), Sd15Json);
        var c = CLIPTextConfig.Load(dir.File("config.json"));
        Assert.Equal(CLIPTextConfig.StableDiffusion15, c);
        Assert.Equal(64, c.HeadDim);
        using var written = JsonDocument.Parse(c.ToJson());
        Assert.Equal("4.22.0.dev0", written.RootElement.GetProperty("transformers_version").GetString());
        Assert.Equal(768, written.RootElement.GetProperty("hidden_size").GetInt32());
        Assert.Equal("quick_gelu", written.RootElement.GetProperty("hidden_act").GetString());
        Assert.Equal(c, CLIPTextConfig.FromJson(c.ToJson()));
    }

    [Fact]
    public void Tiny_round_trips_and_differs_from_full_size()
    {
        var t = CLIPTextConfig.FromJson(CLIPTextConfig.Tiny.ToJson());
        Assert.Equal(CLIPTextConfig.Tiny, t);
        Assert.Equal((32, 2, 4, 37, 49408, 77), (t.HiddenSize, t.NumHiddenLayers, t.NumAttentionHeads, t.IntermediateSize, t.VocabSize, t.MaxPositionEmbeddings));
        Assert.NotEqual(CLIPTextConfig.StableDiffusion15, t);
    }

    [Fact]
    public void Invalid_configs_are_user_errors_naming_the_key()
    {
        var e = Assert.Throws<DreamBoothException>(() => CLIPTextConfig.FromJson("""{"hidden_size": 30, "num_attention_heads": 4}"""));
        Assert.Contains("hidden_size", e.Message);
        e = Assert.Throws<DreamBoothException>(() => CLIPTextConfig.FromJson("""{"hidden_act": "swish"}"""));
        Assert.Contains("hidden_act", e.Message);
        Assert.Throws<DreamBoothException>(() => CLIPTextConfig.FromJson("[1,2]"));
        Assert.Throws<DreamBoothException>(() => CLIPTextConfig.Load("/nonexistent/config.json"));
    }
}
