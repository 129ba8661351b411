using DreamBooth.Text;
using static DreamBooth.Tests.Text.ClipTokenizerTests;

namespace DreamBooth.Tests.Text;

public class PromptOptionsTests
{
    const int Bos = 49406, Eos = 49407;
    static readonly int[] Cat = { 320, 1125, 539, 320, 2368 }; // "a photo of a cat"

    static string Words(int n) => string.Join(" ", Enumerable.Repeat("cat", n)); // "cat" is one token (2368)

    [Fact]
    public void Defaults_match_the_extension()
    {
        var d = PromptOptions.Default;
        Assert.True(d.PadTokens);
        Assert.False(d.StrictTokens);
        Assert.True(d.ShuffleTags);
        Assert.Equal(75, d.MaxTokenLength);
        Assert.False(PromptOptions.Inference.ShuffleTags);
    }

    [Fact]
    public void Pad_tokens_on_pads_to_77_off_pads_to_the_longest_prompt()
    {
        var prompts = new[] { "a photo of a cat", "a cat" };
        var padded = Tok.TokenizeToIds(prompts, PromptOptions.Inference);
        Assert.All(padded, r => Assert.Equal(77, r.Length));
        Assert.Equal(new[] { Bos }.Concat(Cat).Append(Eos).Concat(Enumerable.Repeat(Eos, 70)), padded[0]);

        var unpadded = Tok.TokenizeToIds(prompts, PromptOptions.Inference with { PadTokens = false });
        Assert.Equal(new[] { Bos, 320, 1125, 539, 320, 2368, Eos }, unpadded[0]);
        Assert.Equal(new[] { Bos, 320, 2368, Eos, Eos, Eos, Eos }, unpadded[1]);
    }

    [Fact]
    public void Max_token_length_75_truncates_to_75_tokens_between_bos_and_eos()
    {
        var row = Tok.TokenizeToIds(new[] { Words(100) }, PromptOptions.Inference)[0];
        Assert.Equal(77, row.Length);
        Assert.Equal(Bos, row[0]);
        Assert.All(row[1..76], id => Assert.Equal(2368, id));
        Assert.Equal(Eos, row[76]);
    }

    [Fact]
    public void Max_token_length_150_and_225_make_75_token_chunks_each_wrapped_in_bos_eos()
    {
        var opts = PromptOptions.Inference with { MaxTokenLength = 150 };
        var row = Tok.TokenizeToIds(new[] { Words(100) }, opts)[0];
        Assert.Equal(154, row.Length);
        Assert.Equal(Bos, row[0]);
        Assert.All(row[1..76], id => Assert.Equal(2368, id));
        Assert.Equal(Eos, row[76]);
        Assert.Equal(Bos, row[77]);
        Assert.All(row[78..103], id => Assert.Equal(2368, id)); // tokens 76..100
        Assert.All(row[103..], id => Assert.Equal(Eos, id));

        var longRow = Tok.TokenizeToIds(new[] { Words(300) }, PromptOptions.Inference with { MaxTokenLength = 225 })[0];
        Assert.Equal(231, longRow.Length);
        Assert.Equal(225, longRow.Count(id => id == 2368)); // truncated at 225
        Assert.Equal(new[] { Bos, Bos, Bos }, new[] { longRow[0], longRow[77], longRow[154] });
        Assert.Equal(new[] { Eos, Eos, Eos }, new[] { longRow[76], longRow[153], longRow[230] });

        // A short prompt still fills all chunks when padded (the empty chunks are BOS EOS…).
        var shortRow = Tok.TokenizeToIds(new[] { "a photo of a cat" }, opts)[0];
        Assert.Equal(154, shortRow.Length);
        Assert.Equal(Bos, shortRow[77]);
        // ...and stays one chunk without padding.
        Assert.Equal(7, Tok.TokenizeToIds(new[] { "a photo of a cat" }, opts with { PadTokens = false })[0].Length);
        // Without padding a long row keeps its first chunk at 77 so chunks stay aligned.
        Assert.Equal(77 + 27, Tok.TokenizeToIds(new[] { Words(100) }, opts with { PadTokens = false })[0].Length);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(76)]
    [InlineData(100)]
    [InlineData(300)]
    public void Other_max_token_lengths_are_user_errors(int length)
    {
        var e = Assert.Throws<DreamBoothException>(() => Tok.TokenizeToIds(new[] { "a" }, PromptOptions.Inference with { MaxTokenLength = length }));
        Assert.Contains("max_token_length", e.Message);
    }

    [Fact]
    public void Strict_tokens_wrap_each_phrase_in_its_own_bos_eos()
    {
        var strict = Tok.TokenizeToIds(new[] { "a photo, of a cat. ohwx" }, PromptOptions.Inference with { StrictTokens = true, PadTokens = false })[0];
        Assert.Equal(new[] { Bos, 320, 1125, Eos, Bos, 539, 320, 2368, Eos, Bos, 47993, Eos }, strict);
        var loose = Tok.TokenizeToIds(new[] { "a photo, of a cat. ohwx" }, PromptOptions.Inference with { PadTokens = false })[0];
        Assert.Equal(new[] { Bos, 320, 1125, 267, 539, 320, 2368, 269, 47993, Eos }, loose);
        // Punctuation not followed by whitespace does not split ("3.5" stays one phrase).
        Assert.Equal(new[] { "f 3.5", "b" }, PromptTemplate.StrictPhrases("f 3.5! b"));
    }

    [Fact]
    public void Strict_tokens_pack_whole_phrases_into_77_position_chunks()
    {
        var caption = Words(50) + ", " + Words(50);
        var one = Tok.TokenizeToIds(new[] { caption }, PromptOptions.Inference with { StrictTokens = true })[0];
        Assert.Equal(77, one.Length);
        Assert.Equal(50, one.Count(id => id == 2368)); // the second phrase does not fit and is dropped
        var two = Tok.TokenizeToIds(new[] { caption }, PromptOptions.Inference with { StrictTokens = true, MaxTokenLength = 150 })[0];
        Assert.Equal(154, two.Length);
        Assert.Equal(Bos, two[77]);
        Assert.Equal(100, two.Count(id => id == 2368));
    }

    [Fact]
    public void Shuffle_tags_keeps_the_first_tag_and_permutes_the_rest()
    {
        var caption = "ohwx man, red shirt, beach, sunset, smiling, hat, glasses, dog";
        var shuffled = PromptTemplate.ShuffleTags(caption, new Random(7));
        var tags = shuffled.Split(", ");
        Assert.Equal("ohwx man", tags[0]);
        Assert.Equal(caption.Split(", ").Order(), tags.Order());
        Assert.NotEqual(caption, shuffled);
        Assert.Equal(shuffled, PromptTemplate.ShuffleTags(caption, new Random(7))); // seeded → reproducible
        Assert.Equal("a, b", PromptTemplate.ShuffleTags("a, b", new Random(7)));

        var on = Tok.TokenizeToIds(new[] { caption }, PromptOptions.Default, new Random(7))[0];
        var off = Tok.TokenizeToIds(new[] { caption }, PromptOptions.Default with { ShuffleTags = false }, new Random(7))[0];
        Assert.Equal(Tok.TokenizeToIds(new[] { shuffled }, PromptOptions.Inference)[0], on);
        Assert.Equal(Tok.TokenizeToIds(new[] { caption }, PromptOptions.Inference)[0], off);
        Assert.NotEqual(on, off);
    }

    [Fact]
    public void Filewords_are_substituted_and_removed_cleanly_when_missing()
    {
        Assert.Equal("photo of ohwx man, smiling", PromptTemplate.Apply("photo of [filewords]", " ohwx man, smiling "));
        Assert.Equal("ohwx man", PromptTemplate.Apply("[filewords]", "ohwx man"));
        Assert.Equal("a ohwx man b, ohwx man", PromptTemplate.Apply("a [FileWords] b, [filewords]", "ohwx man"));
        Assert.Equal("photo of", PromptTemplate.Apply("photo of [filewords]", null));
        Assert.Equal("best quality", PromptTemplate.Apply("[filewords], best quality", ""));
        Assert.Equal("a, b", PromptTemplate.Apply("a, [filewords], b", ""));
        Assert.Equal("no placeholder", PromptTemplate.Apply("no placeholder", "ignored"));
    }

    [Fact]
    public void Tokenize_returns_an_int64_tensor_of_the_rows()
    {
        using var ids = Tok.Tokenize(new[] { "a photo of a cat", "a cat" }, PromptOptions.Inference with { MaxTokenLength = 150 }, null);
        Assert.Equal(new long[] { 2, 154 }, ids.shape);
        Assert.Equal(TorchSharp.torch.ScalarType.Int64, ids.dtype);
        Assert.Equal(2368L, ids[0, 5].item<long>());
        Assert.Equal((long)Bos, ids[1, 77].item<long>());
    }
}
