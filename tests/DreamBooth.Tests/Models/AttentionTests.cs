using DreamBooth.Models.Attention;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Models;

/// <summary>
/// Attention goes through scaled_dot_product_attention in the form that lets PyTorch pick a fused kernel (flash or
/// memory-efficient on CUDA, its flash kernel on the CPU): 4-D [B, heads, L, d] inputs whose last dimension is
/// contiguous, no explicit mask (CLIP's causal mask as is_causal), no dropout, no fp32 upcast for SD 1.x. Checked
/// against the naive softmax(QKᵀ/√d)·V, and by turning PyTorch's math fallback off: a call a fused kernel cannot take
/// then fails instead of silently running the slow path.
/// </summary>
[Collection(SerialModelTests.Name)]   // the SDP backend switch is process-wide
public class AttentionTests
{
    static Tensor Naive(Attention attn, Tensor x, Tensor? context, int heads)
    {
        var p = attn.named_parameters().ToDictionary(kv => kv.name, kv => (Tensor)kv.parameter);
        var ctx = context ?? x;
        long b = x.shape[0], d = p["to_q.weight"].shape[0] / heads;
        Tensor Heads(Tensor t) => t.view(b, -1, heads, d).permute(0, 2, 1, 3);
        var q = Heads(nn.functional.linear(x, p["to_q.weight"]));
        var k = Heads(nn.functional.linear(ctx, p["to_k.weight"]));
        var v = Heads(nn.functional.linear(ctx, p["to_v.weight"]));
        var weights = (q.matmul(k.transpose(-1, -2)) / Math.Sqrt(d)).softmax(-1);
        var o = weights.matmul(v).permute(0, 2, 1, 3).reshape(b, -1, heads * d);
        return nn.functional.linear(o, p["to_out.0.weight"], p["to_out.0.bias"]);
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Attention_matches_the_naive_softmax_attention_in_fp32_and_bf16(bool cross)
    {
        manual_seed(4);
        using var attn = new Attention(queryDim: 40, crossAttentionDim: cross ? 24 : null, heads: 5, dimHead: 8);
        var x = randn(2, 13, 40);
        var context = cross ? randn(2, 7, 24) : null;
        using var _ = no_grad();
        attn.to(ScalarType.Float64);
        var reference = Naive(attn, x.to(ScalarType.Float64), context?.to(ScalarType.Float64), 5);
        var ours64 = attn.forward(x.to(ScalarType.Float64), context?.to(ScalarType.Float64));
        Assert.True((ours64 - reference).abs().max().item<double>() < 1e-12);
        attn.to(ScalarType.Float32);
        var ours32 = attn.forward(x, context);
        Assert.True((ours32.to(ScalarType.Float64) - reference).abs().max().item<double>() < 1e-5);
        // bf16 in, bf16 out (no fp32 upcast on the way), within bf16's resolution of the exact result
        attn.to(ScalarType.BFloat16);
        var ours16 = attn.forward(x.to(ScalarType.BFloat16), context?.to(ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, ours16.dtype);
        double err = (ours16.to(ScalarType.Float64) - reference).abs().max().item<double>();
        Assert.True(err < 0.05 * reference.abs().max().item<double>(), $"bf16 error {err}");
    }

    [Fact]
    public void Sd15_attention_is_not_upcast_to_fp32()
    {
        // SD 1.x's config: bf16/fp16 attention stays in the compute dtype (an fp32 upcast would rule out the fused kernels on CUDA)
        Assert.False(UNet2DConditionConfig.StableDiffusion15.UpcastAttention);
    }

    [Fact]
    public void With_the_math_fallback_off_the_unet_and_clip_still_run_forward_and_backward_in_fp32_and_bf16()
    {
        // on the CPU (and on CUDA where there is one: the GPU visit runs this test there, where the fused kernels are
        // flash and memory-efficient attention; the CPU's flash kernel, unlike CUDA's, would also take an explicit mask)
        bool math = backends.cuda.math_sdp_enabled();
        Assert.True(backends.cuda.flash_sdp_enabled());
        var devices = cuda.is_available() ? new[] { CPU, CUDA } : new[] { CPU };
        try
        {
            backends.cuda.enable_math_sdp(false);
            // the switch bites: a 3-D call (the [B·heads, L, d] baddbmm layout) has no fused kernel and now fails
            using (var q3 = randn(4, 9, 8))
                Assert.ThrowsAny<Exception>(() => { using var o = nn.functional.scaled_dot_product_attention(q3, q3, q3); });
            foreach (var device in devices)
            {
                manual_seed(2);
                using var unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
                using var te = new CLIPTextModel(CLIPTextConfig.Tiny);
                unet.to(device);
                te.to(device);
                foreach (var dtype in new[] { ScalarType.Float32, ScalarType.BFloat16 })
                {
                    using var scope = NewDisposeScope();
                    unet.to(dtype);
                    te.to(dtype);
                    var ids = randint(0, 49406, [2, 77], dtype: ScalarType.Int64, device: device);
                    var text = te.forward(ids);
                    var pred = unet.forward(randn(2, 4, 8, 8, device: device).to(dtype), tensor(new long[] { 10, 900 }, device: device), text);
                    pred.to(ScalarType.Float32).square().mean().backward();
                    Assert.Equal(dtype, pred.dtype);
                    Assert.All(unet.parameters(), p => { using var g = p.grad; Assert.NotNull(g); });
                    unet.zero_grad();
                    te.zero_grad();
                }
            }
        }
        finally
        {
            backends.cuda.enable_math_sdp(math);
        }
    }
}
