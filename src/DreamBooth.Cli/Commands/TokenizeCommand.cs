using System.CommandLine;
using DreamBooth.Text;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth tokenize --tokenizer PATH "prompt" ...`: CLIP token ids as JSON, one line per prompt.</summary>
public sealed class TokenizeCommand : ICliCommand
{
    public Command Build()
    {
        var tokenizer = new Option<string>("--tokenizer")
        {
            Description = "A tokenizer folder (vocab.json + merges.txt, or a diffusers model folder with tokenizer/) or a bpe_simple_vocab_16e6.txt.gz file",
            Required = true,
        };
        var maxLength = new Option<int>("--max-length")
        {
            Description = "Max token length: 75, or 150/225 for 75-token chunks each wrapped in BOS…EOS and padded to 77",
            DefaultValueFactory = _ => PromptOptions.ChunkTokens,
        };
        var noPad = new Option<bool>("--no-pad") { Description = "Do not pad to 77 per chunk; pad only to the longest prompt given" };
        var strict = new Option<bool>("--strict-tokens") { Description = "Wrap each phrase (split at , ; . ! ? + space) in its own BOS…EOS" };
        var prompts = new Argument<string[]>("prompts") { Description = "Prompts to tokenize", Arity = ArgumentArity.OneOrMore };

        var cmd = new Command("tokenize", "Print the CLIP token ids (with BOS/EOS and padding) of each prompt as a JSON array, one line per prompt");
        cmd.Options.Add(tokenizer);
        cmd.Options.Add(maxLength);
        cmd.Options.Add(noPad);
        cmd.Options.Add(strict);
        cmd.Arguments.Add(prompts);
        cmd.SetAction(parse =>
        {
            var tok = ClipTokenizer.FromPath(parse.GetValue(tokenizer)!);
            var options = PromptOptions.Inference with
            {
                MaxTokenLength = parse.GetValue(maxLength),
                PadTokens = !parse.GetValue(noPad),
                StrictTokens = parse.GetValue(strict),
            };
            var rows = tok.TokenizeToIds(parse.GetValue(prompts)!, options);
            var w = parse.InvocationConfiguration.Output;
            foreach (var row in rows) w.WriteLine("[" + string.Join(",", row) + "]");
            return CliApp.Ok;
        });
        return cmd;
    }
}
