using DreamBooth.Pipelines;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Pipelines;
using DreamBooth.Tests.Training;
using DreamBooth.Text;
using DreamBooth.Training;

namespace DreamBooth.Tests.Text;

/// <summary>A prompt longer than the token limit loses its tail: the count of dropped tokens is said, not swallowed.</summary>
public class PromptTruncationTests
{
    static ClipTokenizer Tok => ClipTokenizerTests.Tok;

    /// <summary>"w0 w1 … w{n-1}": n words of one token each ("a", "b", … are single tokens).</summary>
    static string Words(int n) => string.Join(' ', Enumerable.Range(0, n).Select(i => ((char)('a' + i % 26)).ToString()));

    [Fact]
    public void Dropped_tokens_are_the_tokens_past_the_limit_and_match_what_the_ids_keep()
    {
        Assert.Equal(90, Tok.Encode(Words(90)).Count);
        Assert.Equal(0, Tok.DroppedTokens(Words(75), PromptOptions.Default));
        Assert.Equal(15, Tok.DroppedTokens(Words(90), PromptOptions.Default));
        Assert.Equal(0, Tok.DroppedTokens(Words(90), PromptOptions.Default with { MaxTokenLength = 150 }));
        Assert.Equal(75, Tok.DroppedTokens(Words(300), PromptOptions.Default with { MaxTokenLength = 225 }));
        // the ids really hold 75 of the 90 (BOS + 75 + EOS in one chunk)
        var ids = Tok.TokenizeToIds([Words(90)], PromptOptions.Inference)[0];
        Assert.Equal(77, ids.Length);
        Assert.Equal(75, ids.Count(i => i != Tok.BosId && i != Tok.EosId));
    }

    [Fact]
    public void Strict_tokens_count_phrases_that_no_longer_fit()
    {
        // 3 phrases of 30 tokens: 2 fit in one 77-position chunk (32 + 32), the third (30 tokens) does not
        string caption = string.Join(", ", Enumerable.Range(0, 3).Select(_ => Words(30)));
        var strict = PromptOptions.Default with { StrictTokens = true, ShuffleTags = false };
        Assert.Equal(30, Tok.DroppedTokens(caption, strict));
        Assert.Equal(0, Tok.DroppedTokens(caption, strict with { MaxTokenLength = 150 }));
    }

    [Fact]
    public void The_warning_names_the_prompt_the_counts_and_the_lost_words()
    {
        string prompt = Words(75) + " trailing words here";
        var line = Tok.TruncationWarning("instance prompt", prompt, PromptOptions.Default);
        Assert.Equal("instance prompt is 78 tokens: 3 past the limit of 75 (max_token_length) are dropped (\"trailing words here\")", line);
        Assert.Null(Tok.TruncationWarning("instance prompt", Words(75), PromptOptions.Default));
    }

    [Fact]
    public void The_pipeline_warns_for_prompt_and_negative_past_225_tokens()
    {
        using var pipeline = TinyPipeline.Create();
        var request = TinyPipeline.Request() with { Prompt = Words(240), NegativePrompt = Words(10) };
        var warning = Assert.Single(pipeline.PromptWarnings(request));
        Assert.StartsWith("prompt is 240 tokens: 15 past the limit of 225", warning);
        Assert.Single(pipeline.PromptWarnings(request with { Prompt = "x", NegativePrompt = Words(230) }), w => w.StartsWith("negative prompt is 230 tokens: 5 past"));
        Assert.Empty(pipeline.PromptWarnings(request with { Prompt = Words(225) }));
    }

    [Fact]
    public async Task Sample_prints_the_warning_on_stderr()
    {
        using var dir = TestPaths.NewTempDir();
        string model = SamplingCommandTests.TinyModelFolder(dir);
        var (code, _, err) = await CliTests.Run("sample", "--model", model, "--prompt", Words(230), "--steps", "1", "--seed", "1", "--output", dir.File("out"));
        Assert.True(code == 0, err);
        Assert.Contains("warning: prompt is 230 tokens: 5 past the limit of 225 (3 chunks of 75) are dropped", err);
    }

    [Fact]
    public async Task Xyplot_prints_the_warning_once_per_prompt()
    {
        using var dir = TestPaths.NewTempDir();
        string toy = Path.Combine(TestPaths.DataSamples, "toy", "model", "toy-sd.safetensors");
        // two cells (seeds) with the same long prompt: one warning
        var (code, _, err) = await CliTests.Run("xyplot", "--checkpoints", toy, "--prompts", Words(230), "--x", "seed", "--x-values", "1, 2",
            "--steps", "1", "--device", "cpu", "--output", dir.File("g.png"));
        Assert.True(code == 0, err);
        Assert.Single(err.Split('\n'), l => l.StartsWith("warning: prompt is 230 tokens: 5 past the limit of 225", StringComparison.Ordinal));
    }

    [Fact]
    public void Training_reports_each_cut_prompt_as_a_warning_event_when_it_starts()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir) with { Epochs = 1, MaxTokenLength = 75 };
        // the instance prompt is "ohwx man, [filewords]": one caption pushes it past 75 tokens
        File.WriteAllText(Path.Combine(c.Concepts[0].InstanceDir, "i1.txt"), Words(73));
        int tokens = Tok.Encode("ohwx man, " + Words(73)).Count;
        Assert.InRange(tokens, 76, 80);
        using var m = DreamBoothTrainerTests.TinyModel();
        using var t = new DreamBoothTrainer(c, m);
        var warning = Assert.Single(t.PromptWarnings);
        Assert.StartsWith($"instance prompt of i1.png is {tokens} tokens: {tokens - 75} past the limit of 75 (max_token_length) are dropped", warning);
        var messages = new List<string>();
        t.Run(new SyncProgress<TrainingEvent>(e => { if (e.Kind == TrainingEventKind.Message) messages.Add(e.Message!); }));
        Assert.Contains("warning: " + warning, messages);
    }
}
