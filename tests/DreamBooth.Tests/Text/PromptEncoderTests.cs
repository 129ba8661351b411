using DreamBooth.Models.Clip;
using DreamBooth.Text;
using TorchSharp;
using static DreamBooth.Tests.Text.ClipTokenizerTests;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Text;

public class PromptEncoderTests
{
    static bool Same(Tensor a, Tensor b) => a.shape.SequenceEqual(b.shape) && a.eq(b).all().item<bool>();

    [Fact]
    public void Chunked_ids_are_encoded_chunk_by_chunk_and_concatenated()
    {
        torch.manual_seed(11);
        using var te = new CLIPTextModel(CLIPTextConfig.Tiny);
        te.eval();
        var prompts = new[] { string.Join(", ", Enumerable.Repeat("ohwx man on a beach", 20)), "a photo of a cat" };
        using var ids = Tok.Tokenize(prompts, PromptOptions.Inference with { MaxTokenLength = 150 }, null);
        using var _ = torch.no_grad();
        using var h = PromptEncoder.EncodePrompts(te, ids, clipSkip: 2);
        Assert.Equal(new long[] { 2, 154, 32 }, h.shape);
        using var first = te.Encode(ids[.., ..77], 2);
        using var second = te.Encode(ids[.., 77..], 2);
        Assert.True(Same(h[.., ..77], first));
        Assert.True(Same(h[.., 77..], second));
        Assert.Throws<ArgumentException>(() => te.forward(ids)); // 154 positions exceed the 77 learned ones

        using var unpadded = Tok.Tokenize(prompts, PromptOptions.Inference with { MaxTokenLength = 150, PadTokens = false }, null);
        Assert.True(unpadded.shape[1] is > 77 and < 154);
        using var hu = PromptEncoder.EncodePrompts(te, unpadded, clipSkip: 1);
        Assert.Equal(new long[] { 2, unpadded.shape[1], 32 }, hu.shape);
        using var single = Tok.Tokenize(new[] { "a cat" }, PromptOptions.Inference, null);
        using var hs = PromptEncoder.EncodePrompts(te, single, 1);
        Assert.True(Same(hs, te.forward(single)));
    }
}
