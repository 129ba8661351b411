using System.Text.Json;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;

namespace DreamBooth.Tests.Text;

public class ClipTokenizerTests
{
    static readonly Lazy<ClipTokenizer> Shared = new(() => ClipTokenizer.FromBpeGz(BpeGz));
    internal static string BpeGz => TestPaths.ClipBpeGz;
    internal static ClipTokenizer Tok => Shared.Value;

    // Ids justified from the vocabulary's construction: byte symbol i (printable bytes from '!' first) is id i,
    // the same symbol with </w> is 256 + i, merges follow from 512, the specials are the last two ids.
    static int EndOfWordByte(char c) => 256 + (c - '!');

    [Fact]
    public void Special_tokens_are_the_last_two_ids_and_pad_is_eos()
    {
        Assert.Equal(49406, Tok.BosId);
        Assert.Equal(49407, Tok.EosId);
        Assert.Equal(49407, Tok.PadId);
        Assert.Equal(77, Tok.ModelMaxLength);
        Assert.Equal(49408, Tok.VocabularySize);
        Assert.Equal("<|startoftext|>", Tok.IdToToken(49406));
        Assert.Equal("<|endoftext|>", Tok.IdToToken(49407));
    }

    [Fact]
    public void Single_characters_map_to_their_end_of_word_byte_symbol()
    {
        Assert.Equal(new[] { EndOfWordByte('a') }, Tok.Encode("a"));
        Assert.Equal(320, EndOfWordByte('a'));
        Assert.Equal(new[] { EndOfWordByte('1'), EndOfWordByte('2'), EndOfWordByte('3') }, Tok.Encode("123")); // CLIP splits digits one by one
        Assert.Equal(new[] { EndOfWordByte(','), EndOfWordByte('!') }, Tok.Encode(", !"));
        Assert.Equal(new[] { EndOfWordByte('a') }, Tok.Encode("A")); // lowercased
    }

    [Fact]
    public void Known_prompts_have_the_reference_ids()
    {
        Assert.Equal(new[] { 320, 1125, 539, 320, 2368 }, Tok.Encode("a photo of a cat"));
        Assert.Equal(new[] { 320, 1125, 539, 320, 2368 }, Tok.Encode("  A   PHOTO\tof a\ncat  ")); // whitespace collapse, lowercase
        Assert.Equal(new[] { 47993, 786 }, Tok.Encode("ohwx man"));        // ohwx and sks are single rare tokens
        Assert.Equal(new[] { 48136 }, Tok.Encode("sks"));
        Assert.Equal(new[] { 3306, 267, 1002, 256 }, Tok.Encode("Hello, World!"));
        Assert.Equal(new[] { 585, 568, 847, 713, 889, 982 }, Tok.Encode("it's don't they're")); // 's 't 're split off
        Assert.Equal("'s</w>", Tok.IdToToken(568));
        Assert.Equal(Tok.Encode("photo & of"), Tok.Encode("photo&amp;of"));  // html unescape
        Assert.Equal(Tok.Encode("ohwx"), new[] { Tok.TokenToId("ohwx</w>")!.Value });
    }

    [Fact]
    public void Long_words_split_into_bpe_pieces_and_only_the_last_carries_end_of_word()
    {
        var tokens = Tok.EncodeToTokens("supercalifragilisticexpialidocious");
        Assert.True(tokens.Count > 3);
        Assert.EndsWith("</w>", tokens[^1]);
        Assert.All(tokens.Take(tokens.Count - 1), t => Assert.DoesNotContain("</w>", t));
        Assert.Equal("supercalifragilisticexpialidocious", string.Concat(tokens).Replace("</w>", ""));
    }

    [Fact]
    public void Unicode_goes_through_utf8_bytes_and_decodes_back()
    {
        var ids = Tok.Encode("café 🙂 日本");
        Assert.NotEmpty(ids);
        Assert.Equal("café 🙂 日本", Tok.Decode(ids));
        Assert.Equal("a photo of a cat", Tok.Decode(Tok.Encode("A photo of a cat")));
        Assert.Equal("hello , world !", Tok.Decode(new[] { 49406, 3306, 267, 1002, 256, 49407, 49407 }));
    }

    [Fact]
    public void Cleanup_does_what_ftfy_and_clip_do_to_prompts()
    {
        Assert.Equal("the man's \"hat\"", ClipTokenizer.Clean("  the man\u2019s \u201chat\u201d "));
        Assert.Equal(Tok.Encode("the man's hat"), Tok.Encode("the man\u2019s hat")); // curly apostrophe → 's contraction
        Assert.Equal("fine ABC!", ClipTokenizer.Clean("\ufb01ne \uff21\uff22\uff23\uff01"));
        Assert.Equal("caf\u00e9", ClipTokenizer.Clean("cafe\u0301"));                  // NFC
        Assert.Equal("a & b <c>", ClipTokenizer.Clean("a &amp;amp; b &lt;c&gt;"));     // html unescaped twice
        Assert.Equal("a b c", ClipTokenizer.Clean("a\t\tb \n c"));
    }

    [Fact]
    public void Lowercasing_follows_python_str_lower()
    {
        Assert.Equal("abc é", PythonLowerCaseNormalizer.Lower("ABC É"));
        Assert.Equal("\u03c3\u03bf\u03c6\u03bf\u03c2 \u03c3", PythonLowerCaseNormalizer.Lower("\u03a3\u039f\u03a6\u039f\u03a3 \u03a3")); // final sigma only at word end
        Assert.Equal("i\u0307stanbul", PythonLowerCaseNormalizer.Lower("\u0130stanbul"));
        Assert.Equal("\U00010428", PythonLowerCaseNormalizer.Lower("\U00010400"));                // outside the BMP
    }

    [Fact]
    public void Empty_and_blank_text_give_no_tokens()
    {
        Assert.Empty(Tok.Encode(""));
        Assert.Empty(Tok.Encode(" \t\n "));
        var row = Tok.TokenizeToIds(new[] { "" }, PromptOptions.Inference)[0];
        Assert.Equal(77, row.Length);
        Assert.Equal(49406, row[0]);
        Assert.All(row.Skip(1), id => Assert.Equal(49407, id));
    }

    [Fact]
    public void Matches_an_independent_statement_of_the_reference_algorithm_on_331_fixture_prompts()
    {
        // tests/fixtures/clip/make_tokenizer_cases.py: OpenAI CLIP's algorithm in plain Python (regex, utf-8 bytes, lowest-rank merges).
        var cases = LoadCases();
        Assert.True(cases.Count >= 300);
        var mismatches = cases.Where(c => !Tok.Encode(c.Text).SequenceEqual(c.Ids))
            .Select(c => $"{c.Text} -> [{string.Join(",", Tok.Encode(c.Text))}] expected [{string.Join(",", c.Ids)}]").ToList();
        Assert.True(mismatches.Count == 0, string.Join("\n", mismatches.Take(10)));
    }

    [Fact]
    public void Saved_tokenizer_folder_loads_back_with_the_same_ids()
    {
        using var dir = TestPaths.NewTempDir();
        Tok.Save(dir.Path);
        var vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(File.ReadAllText(dir.File("vocab.json")))!;
        Assert.Equal(49408, vocab.Count);
        Assert.Equal(320, vocab["a</w>"]);
        Assert.Equal(0, vocab["!"]);
        var mergeLines = File.ReadAllLines(dir.File("merges.txt"));
        Assert.Equal("#version: 0.2", mergeLines[0]);
        Assert.Equal("i n", mergeLines[1]);
        Assert.Equal(ClipTokenizer.ClipMergeCount + 1, mergeLines.Length);

        var fromFolder = ClipTokenizer.FromDirectory(dir.Path);
        foreach (var c in LoadCases()) Assert.Equal(c.Ids, fromFolder.Encode(c.Text));
        Assert.Equal(Tok.Encode("a photo of ohwx man"), ClipTokenizer.FromPath(dir.Path).Encode("a photo of ohwx man"));
    }

    [Fact]
    public void Bad_sources_are_user_errors_naming_the_path()
    {
        using var dir = TestPaths.NewTempDir();
        var e = Assert.Throws<DreamBoothException>(() => ClipTokenizer.FromDirectory(dir.Path));
        Assert.Contains("vocab.json", e.Message);
        File.WriteAllText(dir.File("vocab.json"), "{\"a\": 0}");
        File.WriteAllText(dir.File("merges.txt"), "#version: 0.2\n");
        e = Assert.Throws<DreamBoothException>(() => ClipTokenizer.FromDirectory(dir.Path));
        Assert.Contains("<|startoftext|>", e.Message);
        File.WriteAllText(dir.File("vocab.json"), "not json");
        e = Assert.Throws<DreamBoothException>(() => ClipTokenizer.FromDirectory(dir.Path));
        Assert.Contains("vocab.json", e.Message);
        File.WriteAllText(dir.File("x.gz"), "not gzip");
        e = Assert.Throws<DreamBoothException>(() => ClipTokenizer.FromBpeGz(dir.File("x.gz")));
        Assert.Contains("x.gz", e.Message);
        Assert.Throws<DreamBoothException>(() => ClipTokenizer.FromPath(dir.File("missing")));
    }

    internal sealed record Case(string Text, int[] Ids);

    internal static List<Case> LoadCases()
    {
        var path = Path.Combine(TestPaths.RepoRoot, "tests", "fixtures", "clip", "tokenizer_cases.json");
        using var doc = JsonDocument.Parse(File.ReadAllText(path));
        return doc.RootElement.EnumerateArray()
            .Select(e => new Case(e.GetProperty("text").GetString()!, e.GetProperty("ids").EnumerateArray().Select(x => x.GetInt32()).ToArray()))
            .ToList();
    }
}
