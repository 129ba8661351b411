using DreamBooth.Models.Clip;
using DreamBooth.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Models.Clip;

public class CLIPTextModelTests
{
    internal static CLIPTextModel Tiny(long seed = 1, CLIPTextConfig? config = null)
    {
        torch.manual_seed(seed);
        var m = new CLIPTextModel(config ?? CLIPTextConfig.Tiny);
        m.eval();
        return m;
    }

    internal static Tensor RandomIds(long seed, int batch = 2, int length = 77)
    {
        var g = new torch.Generator((ulong)seed);
        return torch.randint(0, 49408, new long[] { batch, length }, dtype: ScalarType.Int64, generator: g);
    }

    internal static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void Forward_gives_the_last_hidden_state_per_token()
    {
        using var m = Tiny();
        using var ids = RandomIds(3);
        using var _ = torch.no_grad();
        using var h = m.forward(ids);
        Assert.Equal(new long[] { 2, 77, 32 }, h.shape);
        Assert.Equal(ScalarType.Float32, h.dtype);
        Assert.True(h.isfinite().all().item<bool>());
        // final_layer_norm output (weight 1, bias 0 at init): zero mean, unit variance per token
        Assert.True(h.mean(new long[] { -1 }).abs().max().item<float>() < 1e-4);
        using var shorter = m.forward(ids[.., ..10]);
        Assert.Equal(new long[] { 2, 10, 32 }, shorter.shape);
    }

    [Fact]
    public void Causal_mask_later_tokens_do_not_change_earlier_states()
    {
        using var m = Tiny();
        using var ids = RandomIds(7, batch: 1);
        using var changed = ids.clone();
        changed[0, 10] = torch.tensor(ids[0, 10].item<long>() == 320 ? 321L : 320L);
        using var _ = torch.no_grad();
        using var a = m.forward(ids);
        using var b = m.forward(changed);
        Assert.True(Same(a[.., ..10], b[.., ..10]), "states before the changed token moved");
        Assert.True((a[.., 10..] - b[.., 10..]).abs().amax(new long[] { -1 }).min().item<float>() > 1e-6, "every later state must see the change");
    }

    [Fact]
    public void Clip_skip_2_equals_the_model_without_its_last_layer()
    {
        using var full = Tiny(2);
        // A 1-layer model with the first layer's weights: its normal output is hidden_states[-2] + final_layer_norm.
        torch.manual_seed(99);
        using var truncated = new CLIPTextModel(CLIPTextConfig.Tiny with { NumHiddenLayers = 1 });
        var weights = full.state_dict().Where(kv => !kv.Key.StartsWith("text_model.encoder.layers.1.", StringComparison.Ordinal))
            .ToDictionary(kv => kv.Key, kv => kv.Value);
        truncated.load_state_dict(weights, strict: true);
        truncated.eval();

        using var ids = RandomIds(8);
        using var _ = torch.no_grad();
        using var skip1 = full.Encode(ids, 1);
        using var skip2 = full.Encode(ids, 2);
        using var reference = truncated.forward(ids);
        using var viaHidden = full.FinalLayerNorm(full.HiddenState(ids, 1));
        Assert.True(Same(skip1, full.forward(ids)));
        Assert.False(skip1.allclose(skip2, rtol: 1e-3, atol: 1e-3));
        Assert.True(skip2.allclose(reference, rtol: 0, atol: 1e-6));
        Assert.True(skip2.allclose(viaHidden, rtol: 0, atol: 1e-6));
        Assert.Throws<DreamBoothException>(() => full.Encode(ids, 0));
        Assert.Throws<DreamBoothException>(() => full.Encode(ids, 3));
    }

    [Fact]
    public void Gelu_config_changes_the_activation()
    {
        using var quick = Tiny(3);
        torch.manual_seed(3);
        using var gelu = new CLIPTextModel(CLIPTextConfig.Tiny with { HiddenAct = "gelu" });
        gelu.eval();
        using var ids = RandomIds(9);
        using var _ = torch.no_grad();
        using var a = quick.forward(ids);
        using var b = gelu.forward(ids);
        Assert.False(a.allclose(b, rtol: 0, atol: 1e-7));
        using var x = torch.linspace(-3, 3, 7);
        using var q = CLIPMLP.QuickGelu(x);
        Assert.Equal(3 / (1 + Math.Exp(-1.702 * 3)), q[6].item<float>(), 5);
        Assert.Throws<DreamBoothException>(() => new CLIPTextModel(CLIPTextConfig.Tiny with { HiddenAct = "relu" }));
    }

    [Fact]
    public void Moves_to_bfloat16_and_keeps_position_ids_out_of_the_state_dict()
    {
        using var m = Tiny();
        m.to(ScalarType.BFloat16);
        using var ids = RandomIds(1);
        using var _ = torch.no_grad();
        using var h = m.forward(ids);
        Assert.Equal(ScalarType.BFloat16, h.dtype);
        Assert.DoesNotContain(m.state_dict().Keys, k => k.Contains("position_ids"));
        Assert.Contains("text_model.embeddings.position_ids", CLIPTextModel.LegacyKeys);
        Assert.True(m.has_buffer("text_model.embeddings.position_ids"));
        Assert.Equal(ScalarType.Int64, m.get_buffer("text_model.embeddings.position_ids")!.dtype);
    }

    [Fact]
    public void Gradients_reach_only_the_token_embeddings_that_were_used()
    {
        using var m = Tiny(4);
        m.train();
        using var ids = torch.tensor(new long[] { 49406, 320, 2368, 49407 }, dtype: ScalarType.Int64).unsqueeze(0);
        using var h = m.Encode(ids, 2);
        using var loss = h.pow(2).mean();
        loss.backward();
        var grad = m.get_parameter("text_model.embeddings.token_embedding.weight")!.grad!;
        using var rowNorms = grad.abs().sum(1);
        Assert.True(rowNorms[2368].item<float>() > 0);
        Assert.True(rowNorms[320].item<float>() > 0);
        Assert.Equal(0f, rowNorms[1125].item<float>());
        // clip skip 2 never runs the last layer, so it gets no gradient
        Assert.Null(m.get_parameter("text_model.encoder.layers.1.mlp.fc1.weight")!.grad);
        Assert.NotNull(m.get_parameter("text_model.encoder.layers.0.mlp.fc1.weight")!.grad);
    }

    [Fact]
    public void Forward_leaves_no_tensors_behind()
    {
        using var m = Tiny();
        using var ids = RandomIds(1);
        using var _ = torch.no_grad();
        using (var warm = m.Encode(ids, 2)) { }
        long before = DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        for (int i = 0; i < 3; i++)
        {
            using var h = m.Encode(ids, 2);
        }
        Assert.Equal(before, DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    static IEnumerable<(string Key, long[] Shape)> TransformersKeys(int layers, int hidden, int mlp, int vocab, int positions)
    {
        yield return ("text_model.embeddings.token_embedding.weight", new long[] { vocab, hidden });
        yield return ("text_model.embeddings.position_embedding.weight", new long[] { positions, hidden });
        for (int i = 0; i < layers; i++)
        {
            var p = $"text_model.encoder.layers.{i}.";
            foreach (var proj in new[] { "k_proj", "v_proj", "q_proj", "out_proj" })
            {
                yield return (p + $"self_attn.{proj}.weight", new long[] { hidden, hidden });
                yield return (p + $"self_attn.{proj}.bias", new long[] { hidden });
            }
            yield return (p + "layer_norm1.weight", new long[] { hidden });
            yield return (p + "layer_norm1.bias", new long[] { hidden });
            yield return (p + "mlp.fc1.weight", new long[] { mlp, hidden });
            yield return (p + "mlp.fc1.bias", new long[] { mlp });
            yield return (p + "mlp.fc2.weight", new long[] { hidden, mlp });
            yield return (p + "mlp.fc2.bias", new long[] { hidden });
            yield return (p + "layer_norm2.weight", new long[] { hidden });
            yield return (p + "layer_norm2.bias", new long[] { hidden });
        }
        yield return ("text_model.final_layer_norm.weight", new long[] { hidden });
        yield return ("text_model.final_layer_norm.bias", new long[] { hidden });
    }

    [Fact]
    public void Full_size_sd15_has_transformers_196_keys_shapes_and_123060480_parameters()
    {
        using var m = new CLIPTextModel(CLIPTextConfig.StableDiffusion15);
        var expected = TransformersKeys(12, 768, 3072, 49408, 77).ToList();
        var actual = m.state_dict();
        Assert.Equal(196, expected.Count);
        Assert.Equal(expected.Select(e => e.Key), actual.Keys); // same keys, same order as transformers saves them
        foreach (var (key, shape) in expected) Assert.Equal(shape, actual[key].shape);
        Assert.Equal(123_060_480L, m.parameters().Sum(p => p.numel()));
    }

    [Fact]
    public void Tiny_has_the_same_key_pattern()
    {
        using var m = Tiny();
        Assert.Equal(TransformersKeys(2, 32, 37, 49408, 77).Select(e => e.Key), m.state_dict().Keys);
    }
}

/// <summary>
/// Seeded-construction tests: module initialisation draws from torch's global generator, which parallel tests also
/// draw from, so they run in the serial collection (after the parallel ones, alone).
/// </summary>
[Collection(SerialModelTests.Name)]
public class CLIPTextModelSerialTests
{
    [Fact]
    public void Same_seed_same_weights_same_output()
    {
        using var a = CLIPTextModelTests.Tiny(5);
        using var b = CLIPTextModelTests.Tiny(5);
        using var c = CLIPTextModelTests.Tiny(6);
        using var ids = CLIPTextModelTests.RandomIds(4);
        using var _ = torch.no_grad();
        using var ya = a.forward(ids);
        using var ya2 = a.forward(ids);
        using var yb = b.forward(ids);
        using var yc = c.forward(ids);
        Assert.True(CLIPTextModelTests.Same(ya, ya2));
        Assert.True(CLIPTextModelTests.Same(ya, yb));
        Assert.False(ya.allclose(yc));
    }
}
