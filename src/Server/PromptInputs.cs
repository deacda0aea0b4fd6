using System.Text.Json;
using LoraEngine.Models.Tokenization;

namespace LoraEngine.Server;

/// <summary>A prompt ready for the engine: its token ids, and its text (what echo returns).</summary>
internal sealed record EnginePrompt(string Text, IReadOnlyList<int> TokenIds);

/// <summary>
/// The prompt shapes OpenAI's completions accept: a string, a list of strings, a list of token ids or a list of
/// token-id lists — one engine request each. Text gets BOS (add_special_tokens) unless it already starts with it, as the
/// engine's own AddRequest does; token ids are taken as they are.
/// </summary>
internal static class PromptInputs
{
    const string Shapes = "prompt must be a string, a list of strings, a list of token ids or a list of lists of token ids";

    public static List<EnginePrompt> Parse(JsonElement prompt, LlmEngine engine, bool addSpecialTokens)
    {
        var tokenizer = engine.Tokenizer;
        int vocabSize = engine.ModelConfig.VocabSize;
        switch (prompt.ValueKind)
        {
            case JsonValueKind.String when prompt.GetString() is { Length: > 0 } text:
                return [FromText(text, engine, addSpecialTokens)];
            case JsonValueKind.Array when prompt.GetArrayLength() > 0:
                var items = prompt.EnumerateArray().ToList();
                if (items.All(i => i.ValueKind == JsonValueKind.Number)) return [FromTokens(TokenIds(prompt, "prompt", vocabSize), tokenizer)];
                if (items.All(i => i.ValueKind == JsonValueKind.String)) return items.Select(i => FromText(i.GetString()!, engine, addSpecialTokens)).ToList();
                if (items.All(i => i.ValueKind == JsonValueKind.Array))
                    return items.Select((i, n) => FromTokens(TokenIds(i, $"prompt[{n}]", vocabSize), tokenizer)).ToList();
                throw new BadRequestException(Shapes, "prompt");
            case JsonValueKind.Undefined or JsonValueKind.Null or JsonValueKind.String or JsonValueKind.Array:
                throw new BadRequestException("Either prompt or prompt_embeds must be provided and non-empty.", "prompt");
            default:
                throw new BadRequestException(Shapes, "prompt");
        }
    }

    /// <summary>Tokenises a text prompt after checking its length in characters (the engine's limit, before any tokenising).</summary>
    public static EnginePrompt FromText(string text, LlmEngine engine, bool addSpecialTokens)
    {
        engine.CheckPromptLength(text);
        var tokenizer = engine.Tokenizer;
        return new(text, tokenizer.Encode(text, addSpecialTokens && !text.StartsWith(tokenizer.BosToken ?? "\0", StringComparison.Ordinal)));
    }

    static EnginePrompt FromTokens(IReadOnlyList<int> ids, HfTokenizer tokenizer) => new(tokenizer.Decode(ids), ids);

    static int[] TokenIds(JsonElement list, string field, int vocabSize)
    {
        var ids = new int[list.GetArrayLength()];
        int i = 0;
        foreach (var item in list.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt32(out int id)) throw new BadRequestException(Shapes, field);
            if (id < 0 || id >= vocabSize) throw new BadRequestException($"token id {id} is outside the vocabulary [0, {vocabSize})", field);
            ids[i++] = id;
        }
        if (ids.Length == 0) throw new BadRequestException("a prompt of token ids must not be empty", field);
        return ids;
    }

    /// <summary>
    /// vLLM's truncate_prompt_tokens: keep the last N tokens (the first N with truncation_side "right"); −1 keeps
    /// the last max_model_len. The text becomes the kept tokens' text.
    /// </summary>
    public static EnginePrompt Truncate(EnginePrompt prompt, int? truncate, string? side, int maxModelLen, HfTokenizer tokenizer)
    {
        if (truncate is null) return prompt;
        int keep = truncate == -1 ? maxModelLen : truncate.Value;
        if (keep < 1) throw new BadRequestException($"truncate_prompt_tokens must be -1 or at least 1, got {truncate}.", "truncate_prompt_tokens");
        if (keep > maxModelLen)
            throw new BadRequestException($"truncate_prompt_tokens value ({keep}) is greater than max_model_len ({maxModelLen}). Please, select a smaller truncation size.", "truncate_prompt_tokens");
        if (prompt.TokenIds.Count <= keep) return prompt;
        var ids = side == "right" ? prompt.TokenIds.Take(keep).ToArray() : prompt.TokenIds.Skip(prompt.TokenIds.Count - keep).ToArray();
        return new EnginePrompt(tokenizer.Decode(ids), ids);
    }
}
