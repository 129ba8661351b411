using System.Globalization;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Parity;

/// <summary>
/// bf16 forward of the UNet and the text encoder (weights, activations and inputs in bf16, as the trainer's compute
/// copy runs) against diffusers' and transformers' bf16 forward on the CPU. bf16 keeps 8 significant bits (relative
/// step 2^-8 ≈ 0.4%), and the two sides round differently inside (their bmm-softmax-bmm attention in bf16, our SDPA), so
/// the stated bound is against the fp32 result: our bf16 error is at most twice diffusers' own bf16 error.
/// </summary>
public class Bf16ParityTests(ITestOutputHelper log)
{
    [Fact]
    public void Bf16_unet_and_text_encoder_forward_are_as_close_to_fp32_as_diffusers_bf16()
    {
        using var scope = NewDisposeScope();
        using var _ = no_grad();
        using var model = TinySdModel.Load(dtype: ScalarType.BFloat16);
        using var f = ParityFile.Open("bf16.safetensors");
        var unet = model.UNet.forward(f.Get("unet.sample", dtype: ScalarType.BFloat16), f.Get("unet.timestep"),
            f.Get("unet.encoder_hidden_states", dtype: ScalarType.BFloat16));
        Assert.Equal(ScalarType.BFloat16, unet.dtype);
        Check("UNet odd [1x4x9x7] t=[261] bf16", unet, f.Get("unet.bf16"), f.Get("unet.fp32"));

        var text = model.TextEncoder.Encode(f.Get("clip.input_ids"), 1);
        Assert.Equal(ScalarType.BFloat16, text.dtype);
        Check("CLIP padded [2x77] bf16", text, f.Get("clip.bf16"), f.Get("clip.fp32"));
    }

    void Check(string name, Tensor ours, Tensor referenceBf16, Tensor referenceFp32)
    {
        var vsDiffusers = Parity.Diff(ours, referenceBf16);
        var ourError = Parity.Diff(ours, referenceFp32);
        var theirError = Parity.Diff(referenceBf16, referenceFp32);
        Parity.Report(log, name + " vs diffusers bf16", vsDiffusers, 3 * theirError.Relative);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"BF16ERR | {name} | ours vs fp32: max rel {ourError.Relative:0.00e+00}, mean {ourError.MeanAbs:0.00e+00} | diffusers bf16 vs fp32: max rel {theirError.Relative:0.00e+00}, mean {theirError.MeanAbs:0.00e+00} | bound 2x"));
        Assert.True(ourError.Relative <= 2 * theirError.Relative, $"{name}: our bf16 error {ourError} exceeds 2x diffusers' {theirError}");
        Assert.True(ourError.MeanAbs <= 2 * theirError.MeanAbs, $"{name}: our mean bf16 error {ourError} exceeds 2x diffusers' {theirError}");
        Assert.True(vsDiffusers.Relative <= 3 * theirError.Relative, $"{name}: ours vs diffusers' bf16 {vsDiffusers}");
    }
}
