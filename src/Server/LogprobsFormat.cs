using LoraEngine.Models.Tokenization;

namespace LoraEngine.Server;

/// <summary>
/// Engine logprobs in the wire shapes vLLM returns: completions' legacy lists, chat's content entries, and prompt
/// logprobs keyed by token id. −∞ (and NaN) become −9999, the finite value OpenAI uses, so every body is valid JSON.
/// </summary>
internal sealed class LogprobsFormat(HfTokenizer tokenizer, bool tokensAsIds)
{
    /// <summary>A token as text, or "token_id:{id}" with return_tokens_as_token_ids.</summary>
    string TokenText(int id) => tokensAsIds ? $"token_id:{id}" : tokenizer.Decode([id]);

    static float Finite(float logprob) => float.IsNaN(logprob) || logprob < -9999f ? -9999f : logprob;

    /// <summary>
    /// Completions' logprobs for <paramref name="tokens"/>; a null entry (the first echoed prompt token) has a null logprob.
    /// top_logprobs hold the top k and the sampled token, keyed by text; text_offset counts from <paramref name="textOffset"/>.
    /// </summary>
    public CompletionLogprobs Completion(IReadOnlyList<int> tokens, IReadOnlyList<IReadOnlyDictionary<int, Logprob>?> entries, int textOffset)
    {
        var texts = new List<string>(tokens.Count);
        var values = new List<float?>(tokens.Count);
        var tops = new List<Dictionary<string, float>?>(tokens.Count);
        var offsets = new List<int>(tokens.Count);
        for (int i = 0; i < tokens.Count; i++)
        {
            string text = TokenText(tokens[i]);
            texts.Add(text);
            offsets.Add(textOffset);
            textOffset += text.Length;
            if (entries[i] is not { } entry)
            {
                values.Add(null);
                tops.Add(null);
                continue;
            }
            values.Add(Finite(entry[tokens[i]].Value));
            var top = new Dictionary<string, float>();
            foreach (var (id, lp) in entry.OrderBy(kv => kv.Value.Rank)) top.TryAdd(TokenText(id), Finite(lp.Value));
            tops.Add(top);
        }
        return new CompletionLogprobs(texts, values, tops, offsets);
    }

    /// <summary>Chat logprobs: each token with its bytes and the <paramref name="top"/> most likely (−1: all returned).</summary>
    public ChatLogprobs Chat(IReadOnlyList<int> tokens, IReadOnlyList<IReadOnlyDictionary<int, Logprob>> entries, int top)
    {
        List<int> Bytes(int id) => tokenizer.TokenBytes(id).Select(b => (int)b).ToList();
        int k = top < 0 ? int.MaxValue : top;
        return new ChatLogprobs(tokens.Select((t, i) => new ChatTokenLogprob(TokenText(t), Finite(entries[i][t].Value), Bytes(t),
            entries[i].Where(kv => kv.Value.Rank <= k).OrderBy(kv => kv.Value.Rank)
                .Select(kv => new TopLogprob(TokenText(kv.Key), Finite(kv.Value.Value), Bytes(kv.Key))).ToList())).ToList());
    }

    /// <summary>vLLM's prompt_logprobs: per prompt position null (the first) or token id → {logprob, rank, decoded_token}.</summary>
    public static List<Dictionary<string, LogprobEntry>?>? Prompt(IReadOnlyList<IReadOnlyDictionary<int, Logprob>?>? promptLogprobs) =>
        promptLogprobs?.Select(entry => entry?.ToDictionary(kv => kv.Key.ToString(System.Globalization.CultureInfo.InvariantCulture),
            kv => new LogprobEntry(Finite(kv.Value.Value), kv.Value.Rank, kv.Value.DecodedToken))).ToList();
}
