using System.Text.Json;
using System.Text.Json.Nodes;

namespace LoraEngine.Models.Tokenization;

/// <summary>
/// What LoraEngine reads from a Hugging Face <c>tokenizer.json</c> (Llama 3 layout: Split pre-tokenizer,
/// byte-level BPE, added tokens, a TemplateProcessing post-processor that prepends BOS).
/// </summary>
internal sealed record TokenizerJson(
    Dictionary<string, int> Vocab,
    List<string> Merges,
    Dictionary<string, int> AddedTokens,
    HashSet<int> SpecialIds,
    string SplitRegex,
    string? BosToken,
    bool IgnoreMerges)
{
    public static TokenizerJson Parse(string path)
    {
        JsonNode root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) ?? throw Fault(path, "the file is empty");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }
        try
        {
            var model = root["model"] as JsonObject ?? throw Fault(path, "no 'model' object");
            string type = model["type"]?.GetValue<string>() ?? "BPE";
            if (type != "BPE") throw Fault(path, $"model.type '{type}' is not supported (byte-level BPE is)");
            var vocab = (model["vocab"] as JsonObject ?? throw Fault(path, "no model.vocab object"))
                .ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>());
            var merges = (model["merges"] as JsonArray ?? throw Fault(path, "no model.merges array"))
                .Select(m => m is JsonArray pair ? $"{pair[0]!.GetValue<string>()} {pair[1]!.GetValue<string>()}" : m!.GetValue<string>())
                .ToList();
            bool ignoreMerges = model["ignore_merges"]?.GetValue<bool>() ?? false;

            var added = new Dictionary<string, int>(StringComparer.Ordinal);
            var special = new HashSet<int>();
            if (root["added_tokens"] is JsonArray addedTokens)
                foreach (var t in addedTokens)
                {
                    string content = t!["content"]!.GetValue<string>();
                    int id = t["id"]!.GetValue<int>();
                    added[content] = id;
                    if (t["special"]?.GetValue<bool>() ?? false) special.Add(id);
                }

            string regex = FindSplitRegex(root["pre_tokenizer"]) ?? throw Fault(path, "no Split pre-tokenizer with a Regex pattern");
            string? bos = (root["post_processor"]?["single"] as JsonArray)?
                .Select(x => x?["SpecialToken"]?["id"]?.GetValue<string>()).FirstOrDefault(x => x != null);
            return new TokenizerJson(vocab, merges, added, special, regex, bos, ignoreMerges);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or NullReferenceException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: malformed tokenizer ({e.Message})", e);
        }
    }

    static string? FindSplitRegex(JsonNode? node)
    {
        if (node is null) return null;
        if (node["type"]?.GetValue<string>() == "Split") return node["pattern"]?["Regex"]?.GetValue<string>();
        if (node["pretokenizers"] is JsonArray list)
            foreach (var child in list)
                if (FindSplitRegex(child) is { } r) return r;
        return null;
    }

    static InvalidDataException Fault(string path, string what) => new($"{path}: {what}");
}
