using System.IO.Compression;
using System.Net;
using System.Text;
using System.Text.Json;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Text;

/// <summary>
/// The CLIP BPE tokenizer of Stable Diffusion 1.x (OpenAI CLIP ViT-L/14), on Microsoft.ML.Tokenizers'
/// <see cref="BpeTokenizer"/>: CLIP's text cleanup (see <see cref="Clean"/>),
/// lowercasing as Python does (<see cref="PythonLowerCaseNormalizer"/>), CLIP's pre-tokenization pattern, byte-level BPE with the <c>&lt;/w&gt;</c> end-of-word
/// suffix. Ids are those of OpenAI's <c>SimpleTokenizer</c> and Hugging Face's <c>CLIPTokenizer</c>.
/// </summary>
public sealed partial class ClipTokenizer
{
    public const string StartOfText = "<|startoftext|>";
    public const string EndOfText = "<|endoftext|>";

    /// <summary>CLIP's pre-tokenization pattern (special tokens, English contractions, letter runs, single digits, other-symbol runs).</summary>
    public const string PreTokenizePattern = @"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

    /// <summary>Merges in the original <c>bpe_simple_vocab_16e6.txt</c> that CLIP uses (49152 − 256 − 2).</summary>
    public const int ClipMergeCount = 49152 - 256 - 2;

    readonly BpeTokenizer _bpe;
    readonly IReadOnlyList<string> _merges;
    readonly Dictionary<int, string> _idToToken;
    readonly Dictionary<char, byte> _unicodeToByte;

    public int BosId { get; }
    public int EosId { get; }
    /// <summary>SD1.x pads with the end-of-text token.</summary>
    public int PadId => EosId;
    public int ModelMaxLength { get; } = 77;
    public int VocabularySize => _idToToken.Count;

    ClipTokenizer(IReadOnlyDictionary<string, int> vocab, IReadOnlyList<string> merges, string source)
    {
        if (!vocab.TryGetValue(StartOfText, out int bos) || !vocab.TryGetValue(EndOfText, out int eos))
            throw new DreamBoothException($"{source}: the vocabulary lacks {StartOfText} or {EndOfText}; expected a CLIP tokenizer");
        BosId = bos;
        EosId = eos;
        _merges = merges;
        var special = new Dictionary<string, int> { [StartOfText] = bos, [EndOfText] = eos };
        var options = new BpeOptions(vocab)
        {
            Merges = merges,
            SpecialTokens = special,
            ByteLevel = true,
            EndOfWordSuffix = "</w>",
            Normalizer = PythonLowerCaseNormalizer.Instance,
            PreTokenizer = new RegexPreTokenizer(ClipPattern(), special),
        };
        try
        {
            _bpe = BpeTokenizer.Create(options);
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException or FormatException or KeyNotFoundException)
        {
            throw new DreamBoothException($"{source}: not a valid BPE vocabulary/merges pair ({e.Message})", e);
        }
        _idToToken = new Dictionary<int, string>(vocab.Count);
        foreach (var (token, id) in vocab) _idToToken[id] = token;
        _unicodeToByte = new Dictionary<char, byte>(256);
        var table = BytesToUnicode();
        for (int b = 0; b < 256; b++) _unicodeToByte[table[b]] = (byte)b;
    }

    [GeneratedRegex(PreTokenizePattern, RegexOptions.IgnoreCase | RegexOptions.CultureInvariant)]
    private static partial Regex ClipPattern();

    [GeneratedRegex(@"\s+")]
    private static partial Regex Whitespace();

    // ---------------------------------------------------------------- sources

    /// <summary>A diffusers/transformers <c>tokenizer/</c> folder with <c>vocab.json</c> and <c>merges.txt</c>.</summary>
    public static ClipTokenizer FromDirectory(string dir)
    {
        if (!Directory.Exists(dir)) throw new DreamBoothException($"{dir}: tokenizer folder not found (expected vocab.json and merges.txt)");
        var vocab = Path.Combine(dir, "vocab.json");
        var merges = Path.Combine(dir, "merges.txt");
        if (!File.Exists(vocab) || !File.Exists(merges))
            throw new DreamBoothException($"{dir}: expected vocab.json and merges.txt in the tokenizer folder");
        return FromVocabAndMerges(vocab, merges);
    }

    /// <summary>A Hugging Face <c>vocab.json</c> (token → id) and <c>merges.txt</c> (one "a b" pair per line, optional <c>#version</c> header).</summary>
    public static ClipTokenizer FromVocabAndMerges(string vocabJson, string merges)
    {
        Dictionary<string, int> vocab;
        try
        {
            using var s = File.OpenRead(vocabJson);
            vocab = JsonSerializer.Deserialize<Dictionary<string, int>>(s)
                    ?? throw new DreamBoothException($"{vocabJson}: empty vocabulary");
        }
        catch (JsonException e)
        {
            throw new DreamBoothException($"{vocabJson}: not a JSON object of token → id ({e.Message})", e);
        }
        catch (FileNotFoundException)
        {
            throw new DreamBoothException($"{vocabJson}: file not found");
        }
        if (!File.Exists(merges)) throw new DreamBoothException($"{merges}: file not found");
        var lines = new List<string>();
        int lineNo = 0;
        foreach (var line in File.ReadLines(merges, Encoding.UTF8))
        {
            lineNo++;
            if (lineNo == 1 && line.StartsWith("#version", StringComparison.Ordinal)) continue;
            if (line.Length == 0) continue;
            if (line.Split(' ').Length != 2) throw new DreamBoothException($"{merges}: line {lineNo} is not a pair \"a b\": {line}");
            lines.Add(line);
        }
        return new ClipTokenizer(vocab, lines, vocabJson);
    }

    /// <summary>
    /// OpenAI's <c>bpe_simple_vocab_16e6.txt.gz</c>: line 1 is a header, the next 48894 lines are the merges;
    /// the vocabulary is the 256 byte symbols, the same with <c>&lt;/w&gt;</c>, one token per merge, then the two
    /// special tokens (49406, 49407).
    /// </summary>
    public static ClipTokenizer FromBpeGz(string bpeSimpleVocabGz)
    {
        if (!File.Exists(bpeSimpleVocabGz)) throw new DreamBoothException($"{bpeSimpleVocabGz}: file not found");
        string[] lines;
        try
        {
            using var file = File.OpenRead(bpeSimpleVocabGz);
            using var gz = new GZipStream(file, CompressionMode.Decompress);
            using var reader = new StreamReader(gz, Encoding.UTF8);
            lines = reader.ReadToEnd().Split('\n');
        }
        catch (InvalidDataException e)
        {
            throw new DreamBoothException($"{bpeSimpleVocabGz}: not a gzip file ({e.Message})", e);
        }
        if (lines.Length < ClipMergeCount + 1)
            throw new DreamBoothException($"{bpeSimpleVocabGz}: expected at least {ClipMergeCount + 1} lines (header + merges), found {lines.Length}");
        var merges = new List<string>(ClipMergeCount);
        for (int i = 1; i <= ClipMergeCount; i++)
        {
            var pair = lines[i].Split(' ');
            if (pair.Length != 2) throw new DreamBoothException($"{bpeSimpleVocabGz}: line {i + 1} is not a pair \"a b\": {lines[i]}");
            merges.Add(lines[i]);
        }
        var vocab = new Dictionary<string, int>(49408);
        var symbols = ByteSymbolsInVocabularyOrder();
        foreach (var c in symbols) vocab[c.ToString()] = vocab.Count;
        foreach (var c in symbols) vocab[c + "</w>"] = vocab.Count;
        foreach (var m in merges) vocab[m.Replace(" ", "", StringComparison.Ordinal)] = vocab.Count;
        vocab[StartOfText] = vocab.Count;
        vocab[EndOfText] = vocab.Count;
        if (vocab.Count != 49408) throw new DreamBoothException($"{bpeSimpleVocabGz}: merges produce duplicate tokens (vocabulary {vocab.Count}, expected 49408)");
        return new ClipTokenizer(vocab, merges, bpeSimpleVocabGz);
    }

    /// <summary>A folder with vocab.json + merges.txt, or a <c>bpe_simple_vocab_16e6.txt.gz</c> file.</summary>
    public static ClipTokenizer FromPath(string path)
    {
        if (Directory.Exists(path))
        {
            var sub = Path.Combine(path, "tokenizer");
            return File.Exists(Path.Combine(path, "vocab.json")) || !Directory.Exists(sub) ? FromDirectory(path) : FromDirectory(sub);
        }
        if (File.Exists(path) && path.EndsWith(".gz", StringComparison.OrdinalIgnoreCase)) return FromBpeGz(path);
        if (File.Exists(path) && Path.GetFileName(path).Equals("vocab.json", StringComparison.OrdinalIgnoreCase))
            return FromDirectory(Path.GetDirectoryName(Path.GetFullPath(path))!);
        throw new DreamBoothException($"{path}: expected a tokenizer folder (vocab.json + merges.txt) or a bpe_simple_vocab_16e6.txt.gz file");
    }

    /// <summary>
    /// Writes a diffusers/transformers <c>tokenizer/</c> folder: <c>vocab.json</c>, <c>merges.txt</c> (with the
    /// <c>#version: 0.2</c> header), <c>special_tokens_map.json</c> and <c>tokenizer_config.json</c> (SD1.x values).
    /// </summary>
    public void Save(string dir)
    {
        Directory.CreateDirectory(dir);
        var vocab = new SortedDictionary<int, string>(_idToToken);
        var ordered = vocab.ToDictionary(kv => kv.Value, kv => kv.Key);
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "vocab.json"), JsonSerializer.Serialize(ordered, SaveJson));
        var merges = new StringBuilder("#version: 0.2\n");
        foreach (var m in _merges) merges.Append(m).Append('\n');
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "merges.txt"), merges.ToString());
        var specials = new Dictionary<string, string>
        {
            ["bos_token"] = StartOfText, ["eos_token"] = EndOfText, ["pad_token"] = EndOfText, ["unk_token"] = EndOfText,
        };
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "special_tokens_map.json"), JsonSerializer.Serialize(specials, SaveJsonIndented));
        var config = new Dictionary<string, object>
        {
            ["tokenizer_class"] = "CLIPTokenizer", ["model_max_length"] = ModelMaxLength, ["do_lower_case"] = true,
            ["bos_token"] = StartOfText, ["eos_token"] = EndOfText, ["pad_token"] = EndOfText, ["unk_token"] = EndOfText,
            ["errors"] = "replace", ["add_prefix_space"] = false,
        };
        IO.AtomicFile.WriteAllText(Path.Combine(dir, "tokenizer_config.json"), JsonSerializer.Serialize(config, SaveJsonIndented));
    }

    static readonly JsonSerializerOptions SaveJson = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
    static readonly JsonSerializerOptions SaveJsonIndented = new() { WriteIndented = true };

    // ---------------------------------------------------------------- encode / decode

    /// <summary>
    /// CLIP's cleanup without the ftfy package: the deterministic parts of ftfy's defaults that change prompts
    /// (NFC normalization, curly quotes → straight, Latin ligatures → letters, fullwidth ASCII → ASCII), then
    /// CLIP's own steps: html unescape (twice), whitespace collapse, strip. ftfy's mojibake repair is not done.
    /// </summary>
    public static string Clean(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var sb = new StringBuilder(text.Length);
        foreach (var c in text.Normalize(NormalizationForm.FormC))
        {
            switch (c)
            {
                case '\u2018' or '\u2019' or '\u201A' or '\u201B': sb.Append('\''); break;
                case '\u201C' or '\u201D' or '\u201E' or '\u201F': sb.Append('"'); break;
                case '\uFB00': sb.Append("ff"); break;
                case '\uFB01': sb.Append("fi"); break;
                case '\uFB02': sb.Append("fl"); break;
                case '\uFB03': sb.Append("ffi"); break;
                case '\uFB04': sb.Append("ffl"); break;
                case '\uFB05' or '\uFB06': sb.Append("st"); break;
                case >= '\uFF01' and <= '\uFF5E': sb.Append((char)(c - 0xFEE0)); break;
                case '\u3000': sb.Append(' '); break;
                default: sb.Append(c); break;
            }
        }
        var t = WebUtility.HtmlDecode(WebUtility.HtmlDecode(sb.ToString())).Trim();
        return Whitespace().Replace(t, " ").Trim();
    }

    /// <summary>Token ids of <paramref name="text"/> without BOS/EOS and without truncation.</summary>
    public IReadOnlyList<int> Encode(string text)
    {
        var cleaned = Clean(text);
        if (cleaned.Length == 0) return Array.Empty<int>();
        return _bpe.EncodeToIds(cleaned, considerPreTokenization: true, considerNormalization: true);
    }

    /// <summary>The BPE tokens (strings, with <c>&lt;/w&gt;</c>) of <paramref name="text"/>, for display.</summary>
    public IReadOnlyList<string> EncodeToTokens(string text) => Encode(text).Select(IdToToken).ToList();

    public string IdToToken(int id) =>
        _idToToken.TryGetValue(id, out var t) ? t : throw new ArgumentOutOfRangeException(nameof(id), id, "not in the vocabulary");

    public int? TokenToId(string token) => _bpe.Vocabulary.TryGetValue(token, out var id) ? id : null;

    /// <summary>Text of the ids as CLIP decodes it: tokens joined, bytes restored, <c>&lt;/w&gt;</c> → space; BOS/EOS dropped.</summary>
    public string Decode(IEnumerable<int> ids)
    {
        var bytes = new List<byte>();
        foreach (var id in ids)
        {
            if (id == BosId || id == EosId) continue;
            var token = IdToToken(id);
            bool endOfWord = token.EndsWith("</w>", StringComparison.Ordinal);
            if (endOfWord) token = token[..^4];
            foreach (var c in token)
                if (_unicodeToByte.TryGetValue(c, out var b)) bytes.Add(b);
                else bytes.AddRange(Encoding.UTF8.GetBytes(c.ToString()));
            if (endOfWord) bytes.Add((byte)' ');
        }
        return Encoding.UTF8.GetString(bytes.ToArray()).Trim();
    }

    // ---------------------------------------------------------------- prompts → ids

    /// <summary>
    /// Token id rows for a batch of prompts under <paramref name="options"/> (tag shuffle, strict tokens,
    /// 75-token chunks each wrapped BOS…EOS, truncation, padding with EOS). Every row has the same length:
    /// 77·k with <see cref="PromptOptions.PadTokens"/>, else the longest row of the batch; every 77-position
    /// chunk begins with BOS.
    /// <paramref name="rng"/> drives the tag shuffle (a fresh unseeded one when null).
    /// </summary>
    public int[][] TokenizeToIds(IReadOnlyList<string> prompts, PromptOptions options, Random? rng = null)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        options.Validate();
        int chunkCount = options.MaxTokenLength / PromptOptions.ChunkTokens;
        int fullWidth = chunkCount * ModelMaxLength;
        var rows = new List<int>[prompts.Count];
        for (int i = 0; i < prompts.Count; i++)
        {
            var prompt = prompts[i] ?? "";
            if (options.ShuffleTags) prompt = PromptTemplate.ShuffleTags(prompt, rng ??= new Random());
            rows[i] = options.StrictTokens ? StrictRow(prompt, chunkCount) : ChunkedRow(Encode(prompt), chunkCount);
        }
        int width = options.PadTokens ? fullWidth : rows.Length == 0 ? 0 : rows.Max(r => r.Count);
        var result = new int[rows.Length][];
        for (int i = 0; i < rows.Length; i++)
        {
            var row = new int[width];
            rows[i].CopyTo(row);
            // Padding: every 77-position chunk still starts with BOS (an empty chunk is BOS EOS EOS…, as A1111/kohya).
            for (int j = rows[i].Count; j < width; j++) row[j] = j % ModelMaxLength == 0 ? BosId : PadId;
            result[i] = row;
        }
        return result;
    }

    /// <summary>
    /// How many of <paramref name="prompt"/>'s tokens <see cref="TokenizeToIds"/> drops under <paramref name="options"/>
    /// (past <see cref="PromptOptions.MaxTokenLength"/>; with strict tokens, phrases that no longer fit and the tails of
    /// phrases longer than a chunk), with the prompt's tags in the order written.
    /// </summary>
    public int DroppedTokens(string prompt, PromptOptions options)
    {
        options.Validate();
        if (options.StrictTokens)
        {
            StrictRow(prompt ?? "", options.ChunkCount, out int dropped);
            return dropped;
        }
        return Math.Max(0, Encode(prompt ?? "").Count - options.MaxTokenLength);
    }

    /// <summary>
    /// One line for a prompt that is cut: "{what} is N tokens: the last D past the limit of L are dropped ("… words")", or
    /// null when every token is kept. <paramref name="limitName"/> names the setting behind the limit.
    /// </summary>
    public string? TruncationWarning(string what, string prompt, PromptOptions options, string limitName = "max_token_length")
    {
        int dropped = DroppedTokens(prompt, options);
        if (dropped == 0) return null;
        var tokens = Encode(prompt ?? "");
        string tail = options.StrictTokens ? "" : Decode(tokens.Skip(options.MaxTokenLength));
        if (tail.Length > 60) tail = tail[..57] + "...";
        return $"{what} is {tokens.Count} tokens: {dropped} past the limit of {options.MaxTokenLength} ({limitName}) are dropped" +
               (tail.Length > 0 ? $" (\"{tail}\")" : options.StrictTokens ? " (strict tokens: phrases that do not fit)" : "");
    }

    /// <summary>As <see cref="TokenizeToIds"/>, as an int64 tensor [B, width] on the CPU.</summary>
    public Tensor Tokenize(IReadOnlyList<string> prompts, PromptOptions options, Random? rng = null)
    {
        var rows = TokenizeToIds(prompts, options, rng);
        int width = rows.Length == 0 ? (options.PadTokens ? options.ChunkCount * ModelMaxLength : 0) : rows[0].Length;
        var flat = new long[rows.Length * width];
        for (int i = 0; i < rows.Length; i++)
            for (int j = 0; j < width; j++) flat[i * width + j] = rows[i][j];
        return torch.tensor(flat, new long[] { rows.Length, width }, dtype: ScalarType.Int64);
    }

    /// <summary>
    /// Up to k chunks of 75 tokens, each BOS + tokens + EOS; every chunk but the last padded to 77 so chunks
    /// stay aligned on 77 positions (the last is padded by the caller). At least one chunk (BOS EOS for "").
    /// </summary>
    List<int> ChunkedRow(IReadOnlyList<int> tokens, int chunkCount)
    {
        int n = Math.Min(tokens.Count, chunkCount * PromptOptions.ChunkTokens);
        int chunks = Math.Max(1, (n + PromptOptions.ChunkTokens - 1) / PromptOptions.ChunkTokens);
        var row = new List<int>(chunks * ModelMaxLength);
        for (int c = 0; c < chunks; c++)
        {
            if (c > 0) while (row.Count < c * ModelMaxLength) row.Add(PadId);
            row.Add(BosId);
            for (int j = c * PromptOptions.ChunkTokens; j < Math.Min(n, (c + 1) * PromptOptions.ChunkTokens); j++) row.Add(tokens[j]);
            row.Add(EosId);
        }
        return row;
    }

    /// <summary>
    /// Strict tokens (the A1111 Dreambooth extension's option): the caption is split into phrases at
    /// <c>[,;.!?]</c> followed by whitespace; each phrase is its own BOS…EOS segment (no outer BOS/EOS).
    /// Segments are packed into 77-position chunks without splitting a segment; a segment longer than a
    /// chunk is truncated (its EOS kept); segments that no longer fit in k chunks are dropped.
    /// </summary>
    List<int> StrictRow(string caption, int chunkCount) => StrictRow(caption, chunkCount, out _);

    List<int> StrictRow(string caption, int chunkCount, out int dropped)
    {
        var row = new List<int>(chunkCount * ModelMaxLength);
        int chunk = 0, used = 0;
        dropped = 0;
        foreach (var phrase in PromptTemplate.StrictPhrases(caption))
        {
            var tokens = Encode(phrase);
            if (tokens.Count == 0) continue;
            if (chunk >= chunkCount) { dropped += tokens.Count; continue; }
            int len = Math.Min(tokens.Count, ModelMaxLength - 2) + 2;
            if (used + len > ModelMaxLength)
            {
                chunk++;
                if (chunk >= chunkCount) { dropped += tokens.Count; continue; }
                while (row.Count < chunk * ModelMaxLength) row.Add(PadId);
                used = 0;
            }
            dropped += tokens.Count - (len - 2);
            row.Add(BosId);
            for (int j = 0; j < len - 2; j++) row.Add(tokens[j]);
            row.Add(EosId);
            used += len;
        }
        if (row.Count == 0) { row.Add(BosId); row.Add(EosId); }
        return row;
    }

    // ---------------------------------------------------------------- byte-level table

    /// <summary>GPT-2/CLIP's reversible byte → printable-unicode table (byte b ↦ char).</summary>
    internal static char[] BytesToUnicode()
    {
        var table = new char[256];
        int extra = 0;
        for (int b = 0; b < 256; b++)
            table[b] = IsPrintableByte(b) ? (char)b : (char)(256 + extra++);
        return table;
    }

    /// <summary>The 256 byte symbols in CLIP's vocabulary order: the printable bytes first, then the remapped ones.</summary>
    internal static char[] ByteSymbolsInVocabularyOrder()
    {
        var table = BytesToUnicode();
        var order = new List<char>(256);
        for (int b = 0; b < 256; b++) if (IsPrintableByte(b)) order.Add(table[b]);
        for (int b = 0; b < 256; b++) if (!IsPrintableByte(b)) order.Add(table[b]);
        return order.ToArray();
    }

    static bool IsPrintableByte(int b) => (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
}
