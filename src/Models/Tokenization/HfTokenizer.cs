using System.Text;
using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace LoraEngine.Models.Tokenization;

/// <summary>
/// A Hugging Face tokenizer (Llama 3 layout) on Microsoft.ML.Tokenizers. Special tokens are split out of the
/// text first, so they are recognised wherever they appear; the pieces between go through byte-level BPE —
/// TiktokenTokenizer (whole-piece lookup first, ranks = ids) when tokenizer.json sets <c>ignore_merges</c>,
/// else BpeTokenizer with the file's merges. BOS is prepended here, never by the library, so never twice.
/// </summary>
public sealed class HfTokenizer
{
    readonly Tokenizer _bpe;
    readonly byte[][] _tokenBytes;
    readonly string?[] _idToToken;
    readonly HashSet<int> _specialIds;
    readonly Regex? _specialSplit;
    readonly Dictionary<string, int> _addedTokens;

    HfTokenizer(TokenizerJson json, string? chatTemplate, IReadOnlyList<int> eosIds, string? bosToken)
    {
        _addedTokens = json.AddedTokens;
        _specialIds = json.SpecialIds;
        VocabSize = Math.Max(json.Vocab.Values.DefaultIfEmpty(-1).Max(), json.AddedTokens.Values.DefaultIfEmpty(-1).Max()) + 1;
        _tokenBytes = new byte[VocabSize][];
        _idToToken = new string?[VocabSize];
        foreach (var (token, id) in json.Vocab)
        {
            _idToToken[id] = token;
            _tokenBytes[id] = json.AddedTokens.ContainsKey(token) ? Encoding.UTF8.GetBytes(token) : ByteLevel.ToBytes(token);
        }
        foreach (var (token, id) in json.AddedTokens)
        {
            _idToToken[id] = token;
            _tokenBytes[id] = Encoding.UTF8.GetBytes(token);
        }
        for (int i = 0; i < VocabSize; i++) _tokenBytes[i] ??= [];

        var preTokenizer = new RegexPreTokenizer(new Regex(json.SplitRegex, RegexOptions.Compiled), null);
        var ordinary = json.Vocab.Where(kv => !json.AddedTokens.ContainsKey(kv.Key)).ToList();
        _bpe = json.IgnoreMerges ? CreateTiktoken(ordinary, preTokenizer) : CreateBpe(ordinary, json.Merges, preTokenizer);
        if (json.AddedTokens.Count > 0)
            _specialSplit = new Regex("(" + string.Join("|", json.AddedTokens.Keys.OrderByDescending(k => k.Length).Select(Regex.Escape)) + ")", RegexOptions.Compiled);

        BosToken = bosToken ?? json.BosToken;
        BosTokenId = BosToken != null && json.AddedTokens.TryGetValue(BosToken, out int bos) ? bos : null;
        EosTokenIds = eosIds;
        ChatTemplate = chatTemplate;
        SpecialTokens = json.AddedTokens;
    }

    /// <summary>One past the largest token id (vocabulary and added tokens); ids ≥ this decode to nothing.</summary>
    public int VocabSize { get; }

    /// <summary>The id of <see cref="BosToken"/>, or null when there is none (Encode then adds nothing).</summary>
    public int? BosTokenId { get; }

    /// <summary>The beginning-of-sequence token's text: tokenizer_config.json's bos_token, else the one tokenizer.json's post-processor prepends.</summary>
    public string? BosToken { get; }

    /// <summary>End-of-sequence ids named by tokenizer_config.json (the engine adds the model config's).</summary>
    public IReadOnlyList<int> EosTokenIds { get; }

    /// <summary>The eos token text, for chat templates.</summary>
    public string? EosToken => EosTokenIds.Count > 0 ? IdToToken(EosTokenIds[0]) : null;

    /// <summary>tokenizer.json's added tokens, text → id: Encode recognises them anywhere in the text.</summary>
    public IReadOnlyDictionary<string, int> SpecialTokens { get; }

    /// <summary>The Jinja chat template from chat_template.jinja or tokenizer_config.json, if any.</summary>
    public string? ChatTemplate { get; }

    /// <summary>Loads tokenizer.json, tokenizer_config.json and chat_template.jinja from a model folder.</summary>
    public static HfTokenizer Load(string modelDir)
    {
        string path = Path.Combine(modelDir, "tokenizer.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{modelDir}: no tokenizer.json", path);
        var json = TokenizerJson.Parse(path);

        string? template = null, bos = null, eos = null;
        string configPath = Path.Combine(modelDir, "tokenizer_config.json");
        if (File.Exists(configPath))
        {
            try
            {
                var config = JsonNode.Parse(File.ReadAllText(configPath)) as JsonObject;
                template = ReadTemplate(config?["chat_template"]);
                bos = TokenText(config?["bos_token"]);
                eos = TokenText(config?["eos_token"]);
            }
            catch (Exception e) when (e is JsonException or InvalidOperationException or FormatException)
            {
                throw new InvalidDataException($"{configPath}: malformed ({e.Message})", e);
            }
        }
        string templateFile = Path.Combine(modelDir, "chat_template.jinja");
        if (File.Exists(templateFile)) template = File.ReadAllText(templateFile);

        var eosIds = eos != null && json.AddedTokens.TryGetValue(eos, out int eosId) ? new[] { eosId } : [];
        return new HfTokenizer(json, template, eosIds, bos);
    }

    static string? ReadTemplate(JsonNode? node) => node switch
    {
        null => null,
        JsonArray named => named.FirstOrDefault(t => t?["name"]?.GetValue<string>() == "default")?["template"]?.GetValue<string>(),
        _ => node.GetValue<string>(),
    };

    static string? TokenText(JsonNode? node) => node switch
    {
        null => null,
        JsonObject o => o["content"]?.GetValue<string>(),
        JsonValue v when v.GetValueKind() == JsonValueKind.String => v.GetValue<string>(),
        _ => null,
    };

    static Tokenizer CreateTiktoken(List<KeyValuePair<string, int>> vocab, PreTokenizer preTokenizer)
    {
        var ranks = new StringBuilder();
        foreach (var (token, id) in vocab.OrderBy(kv => kv.Value))
            ranks.Append(Convert.ToBase64String(ByteLevel.ToBytes(token))).Append(' ').Append(id).Append('\n');
        using var stream = new MemoryStream(Encoding.UTF8.GetBytes(ranks.ToString()));
        return TiktokenTokenizer.Create(stream, preTokenizer, normalizer: null);
    }

    static Tokenizer CreateBpe(List<KeyValuePair<string, int>> vocab, List<string> merges, PreTokenizer preTokenizer) =>
        BpeTokenizer.Create(new BpeOptions(vocab) { Merges = merges, PreTokenizer = preTokenizer, ByteLevel = true });

    /// <summary>Whether <paramref name="id"/> is an added token marked special (what skip_special_tokens leaves out).</summary>
    public bool IsSpecial(int id) => _specialIds.Contains(id);

    /// <summary>The token as the vocabulary spells it (byte-level, e.g. "ĠHello"), or null for an id outside it.</summary>
    public string? IdToToken(int id) => id >= 0 && id < VocabSize ? _idToToken[id] : null;

    /// <summary>
    /// The raw bytes of a token (special tokens: their UTF-8 text). Ids past the tokenizer's vocabulary — models often
    /// pad their embedding table beyond it — decode to nothing.
    /// </summary>
    public byte[] TokenBytes(int id)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(id);
        return id < VocabSize ? _tokenBytes[id] : [];
    }

    /// <summary>Token ids of <paramref name="text"/>; with <paramref name="addSpecialTokens"/>, BOS first (as HF does).</summary>
    public IReadOnlyList<int> Encode(string text, bool addSpecialTokens = true)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>();
        if (addSpecialTokens && BosTokenId is int bos) ids.Add(bos);
        if (_specialSplit is null)
        {
            ids.AddRange(_bpe.EncodeToIds(text));
            return ids;
        }
        int last = 0;
        foreach (Match m in _specialSplit.Matches(text))
        {
            if (m.Index > last) ids.AddRange(_bpe.EncodeToIds(text.Substring(last, m.Index - last)));
            ids.Add(_addedTokens[m.Value]);
            last = m.Index + m.Length;
        }
        if (last < text.Length) ids.AddRange(_bpe.EncodeToIds(text[last..]));
        return ids;
    }

    /// <summary>The text of <paramref name="ids"/> (bytes joined, then UTF-8 decoded).</summary>
    public string Decode(IEnumerable<int> ids, bool skipSpecialTokens = false)
    {
        var bytes = new List<byte>();
        foreach (int id in ids)
            if (!(skipSpecialTokens && IsSpecial(id))) bytes.AddRange(TokenBytes(id));
        return Encoding.UTF8.GetString(bytes.ToArray());
    }

    /// <summary>A decoder for one sequence's tokens, one at a time; <paramref name="skipSpecialTokens"/> leaves special tokens out.</summary>
    public StreamingDetokenizer CreateStreamingDecoder(bool skipSpecialTokens = false) => new(this, skipSpecialTokens);
}
