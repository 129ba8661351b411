using DreamBooth.Models;
using DreamBooth.Models.UNet;
using TorchSharp;
using static DreamBooth.Tests.Models.ModelTestSupport;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Models;

public class UNet2DConditionModelTests
{
    internal static UNet2DConditionModel Tiny(long seed)
    {
        manual_seed(seed);
        var unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
        unet.eval();
        return unet;
    }

    internal static (Tensor sample, Tensor t, Tensor text) Inputs(long batch, long h, long w, long seed)
    {
        var g = new Generator((ulong)seed);
        return (randn([batch, 4, h, w], generator: g), tensor(new long[] { 10, 700, 999, 1 }[..(int)batch]),
            randn([batch, 77, 32], generator: g));
    }

    [Theory]
    [InlineData(8, 8)]
    [InlineData(12, 16)] // 96×128 pixels / 8: non-square
    [InlineData(9, 13)]  // odd: upsampling follows the skip connections' sizes
    public void Tiny_forward_returns_the_sample_shape(long h, long w)
    {
        using var scope = NewDisposeScope();
        using var unet = Tiny(1);
        var (sample, t, text) = Inputs(2, h, w, 2);
        using var _ = no_grad();
        var output = unet.forward(sample, t, text);
        Assert.Equal(new long[] { 2, 4, h, w }, output.shape);
        Assert.True(output.isfinite().all().item<bool>());
        Assert.True(output.std().item<float>() > 1e-3, "output is not constant");
    }

    [Fact]
    public void Tiny_state_dict_keys_are_diffusers_keys()
    {
        using var unet = Tiny(1);
        var sd = unet.state_dict();
        string[] expected =
        [
            "conv_in.weight", "time_embedding.linear_1.weight", "time_embedding.linear_2.bias",
            "down_blocks.0.resnets.0.norm1.weight", "down_blocks.0.resnets.0.time_emb_proj.weight",
            "down_blocks.0.attentions.0.norm.weight", "down_blocks.0.attentions.0.proj_in.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_out.0.bias",
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.2.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.norm3.bias",
            "down_blocks.0.downsamplers.0.conv.weight", "down_blocks.1.resnets.0.conv_shortcut.weight",
            "mid_block.resnets.1.conv2.weight", "mid_block.attentions.0.proj_out.weight",
            "up_blocks.0.resnets.1.conv_shortcut.weight", "up_blocks.0.upsamplers.0.conv.weight",
            "up_blocks.1.attentions.1.transformer_blocks.0.attn2.to_v.weight",
            "conv_norm_out.weight", "conv_out.bias",
        ];
        foreach (var key in expected) Assert.True(sd.ContainsKey(key), $"missing {key}");
        Assert.DoesNotContain(sd.Keys, k => k.Contains("to_q.bias") || k.Contains("time_proj") || k.Contains("dropout") || k.Contains("conv_act"));
        // SD1.x: no bias on q/k/v; 1×1 conv projections
        Assert.Equal(new long[] { 32, 32, 1, 1 }, sd["down_blocks.0.attentions.0.proj_in.weight"].shape);
        Assert.Equal(new long[] { 256, 32 }, sd["down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"].shape);
        Assert.Equal(new long[] { 32, 32 }, sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape);
    }

    [Fact]
    public void Linear_projection_config_uses_linear_proj_in_and_per_block_heads()
    {
        var config = UNet2DConditionConfig.Tiny with { UseLinearProjection = true, AttentionHeadDim = new PerBlockInt([4, 8]) };
        using var unet = new UNet2DConditionModel(config);
        var sd = unet.state_dict();
        Assert.Equal(new long[] { 32, 32 }, sd["down_blocks.0.attentions.0.proj_in.weight"].shape);
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        var (sample, t, text) = Inputs(1, 8, 8, 5);
        Assert.Equal(new long[] { 1, 4, 8, 8 }, unet.forward(sample, t, text).shape);
    }

    [Fact]
    public void Bf16_forward_runs_in_bf16_and_tracks_fp32()
    {
        using var scope = NewDisposeScope();
        using var unet = Tiny(3);
        var (sample, t, text) = Inputs(2, 8, 8, 4);
        using var _ = no_grad();
        var reference = unet.forward(sample, t, text);
        unet.to(ScalarType.BFloat16);
        var output = unet.forward(sample.to_type(ScalarType.BFloat16), t, text.to_type(ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, output.dtype);
        // bf16 keeps 8 mantissa bits (~0.4% per rounding); through ~30 layers the error stays within a few percent of the range.
        Assert.True(MaxAbsDiff(output, reference) < 0.05 * MaxAbs(reference) + 0.02, $"bf16 diff {MaxAbsDiff(output, reference)} vs range {MaxAbs(reference)}");
    }

    [Fact]
    public void Gradient_checkpointing_gives_the_same_gradients()
    {
        using var unet = Tiny(11);
        unet.train();
        var g = new Generator(5);
        var sample = randn([2, 4, 8, 8], generator: g);
        var text = randn([2, 77, 32], generator: g);
        var weights = randn([2, 4, 8, 8], generator: g);
        var t = tensor(new long[] { 3, 900 });

        (Dictionary<string, Tensor> grads, Tensor sampleGrad, Tensor textGrad, Tensor output) Run(bool checkpointing)
        {
            unet.GradientCheckpointing = checkpointing;
            unet.zero_grad();
            var s = sample.clone().requires_grad_(true);
            var c = text.clone().requires_grad_(true);
            var output = unet.forward(s, t, c);
            (output * weights).sum().backward();
            var grads = unet.named_parameters().ToDictionary(p => p.name, p => p.parameter.grad!.clone());
            return (grads, s.grad!.clone(), c.grad!.clone(), output.detach());
        }

        var plain = Run(false);
        var checkpointed = Run(true);
        Assert.True(plain.output.Same(checkpointed.output).item<bool>());
        Assert.Equal(plain.grads.Count, checkpointed.grads.Count);
        double largest = plain.grads.Values.Max(MaxAbs);
        foreach (var (name, grad) in plain.grads)
        {
            var other = checkpointed.grads[name];
            // Same ops on the same values; only the order in which autograd adds up the gradient contributions of a
            // tensor used twice (a state that is also a skip) differs, so the sums differ by fp32 rounding:
            // a few ulps of the largest entry (fp32 ulp ≈ 1.2e-7 relative).
            // Some gradients are zero in exact arithmetic (a conv bias right before a GroupNorm with one channel per
            // group) and are pure rounding noise in both runs: they are bounded relative to the largest gradient.
            AssertCloseRelative(grad, other, name, 1e-6 * largest);
        }
        AssertCloseRelative(plain.sampleGrad, checkpointed.sampleGrad, "sample", 1e-7);
        AssertCloseRelative(plain.textGrad, checkpointed.textGrad, "encoder_hidden_states", 1e-7);
        Assert.True(MaxAbs(plain.textGrad) > 0, "text states must receive gradient");
    }

    static void AssertCloseRelative(Tensor expected, Tensor actual, string name, double floor)
    {
        double scale = MaxAbs(expected), diff = MaxAbsDiff(expected, actual);
        Assert.True(diff <= 1e-5 * scale + floor, $"{name}: max diff {diff:E2} vs max |grad| {scale:E2}");
    }

    [Fact]
    public void Checkpointing_with_frozen_inputs_still_trains_the_block_parameters()
    {
        using var unet = Tiny(12);
        unet.train();
        var sample = randn(1, 4, 8, 8);
        var text = randn(1, 77, 32);
        var t = tensor(new long[] { 5 });
        // freeze everything outside the first down block: its inputs then do not require grad
        foreach (var (name, p) in unet.named_parameters()) p.requires_grad = name.StartsWith("down_blocks.0.");
        unet.GradientCheckpointing = true;
        unet.forward(sample, t, text).square().mean().backward();
        var grad = unet.named_parameters().First(p => p.name == "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_q.weight").parameter.grad;
        Assert.NotNull(grad);
        Assert.True(MaxAbs(grad!) > 0);
    }
}

[Collection(SerialModelTests.Name)]
public class UNet2DConditionModelSerialTests
{
    // reads the global generator: runs alone so that no parallel test draws from it in between
    [Fact]
    public void Same_seed_gives_identical_weights_and_outputs_and_timestep_matters()
    {
        using var scope = NewDisposeScope();
        using var a = UNet2DConditionModelTests.Tiny(7);
        using var b = UNet2DConditionModelTests.Tiny(7);
        var (sample, t, text) = UNet2DConditionModelTests.Inputs(2, 8, 8, 3);
        using var _ = no_grad();
        var ya = a.forward(sample, t, text);
        var yb = b.forward(sample, t, text);
        Assert.True(ya.Same(yb).item<bool>());
        var scalar = a.forward(sample, tensor(10L), text); // a scalar timestep is broadcast over the batch
        var other = a.forward(sample, tensor(new long[] { 10, 10 }), text);
        Assert.True(scalar.Same(other).item<bool>());
        Assert.False(ya.Same(other).item<bool>(), "changing the timestep must change the output");
        var floatT = a.forward(sample, t.to_type(ScalarType.Float32), text);
        Assert.True(floatT.allclose(ya, rtol: 0, atol: 1e-6));
        using var c = UNet2DConditionModelTests.Tiny(8);
        Assert.False(c.forward(sample, t, text).Same(ya).item<bool>(), "another seed must give other weights");
    }

    [Fact]
    public void Full_size_SD15_has_diffusers_parameter_count_and_keys_without_allocating()
    {
        using var unet = OnMeta(() => new UNet2DConditionModel(UNet2DConditionConfig.StableDiffusion15));
        var parameters = unet.parameters().ToList();
        Assert.All(parameters, p => Assert.Equal(DeviceType.META, p.device_type));
        Assert.Equal(859_520_964L, parameters.Sum(p => p.numel()));
        var sd = unet.state_dict();
        Assert.Equal(686, sd.Count);
        Assert.Equal(new long[] { 320, 4, 3, 3 }, sd["conv_in.weight"].shape);
        Assert.Equal(new long[] { 320, 768 }, sd["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"].shape);
        Assert.Equal(new long[] { 10240, 1280 }, sd["mid_block.attentions.0.transformer_blocks.0.ff.net.0.proj.weight"].shape);
        Assert.Equal(new long[] { 1280, 2560, 3, 3 }, sd["up_blocks.0.resnets.0.conv1.weight"].shape);
        Assert.Equal(new long[] { 320, 960, 1, 1 }, sd["up_blocks.3.resnets.0.conv_shortcut.weight"].shape);
    }

    [Fact]
    public void Forward_leaves_no_live_tensors_behind()
    {
        using var unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
        var sample = randn(1, 4, 8, 8);
        var text = randn(1, 77, 32);
        var t = tensor(new long[] { 3 });
        using (no_grad()) unet.forward(sample, t, text).Dispose(); // warm-up
        long before = SettledTensorCount();
        using (no_grad()) unet.forward(sample, t, text).Dispose();
        Assert.Equal(before, Tensor.TotalCount);
        unet.train();
        unet.GradientCheckpointing = true;
        void Step()
        {
            using var step = NewDisposeScope();
            unet.forward(sample, t, text).sum().backward();
        }
        Step(); // creates the .grad tensors (one per parameter), which stay
        long afterFirstStep = SettledTensorCount();
        Step();
        Assert.True(Tensor.TotalCount <= afterFirstStep, $"{Tensor.TotalCount - afterFirstStep} tensors leaked by a checkpointed training step");
    }
}
