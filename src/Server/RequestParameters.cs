using System.Text.Json;
using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>
/// What the server does with a request field that no request record member takes (the members are the fields it
/// honours). A harmless field is accepted as it is; a field of a feature not built is accepted only at its "off" value
/// and otherwise refused with a 400 naming it; any other field is refused as OpenAI does ("Unrecognized request
/// argument supplied"). So no field is ever accepted and silently ignored. README's parameter table lists the same.
/// </summary>
internal static class RequestParameters
{
    sealed record Rule(Func<JsonElement, bool> Accepts, string Refusal);

    static Rule Harmless => new(_ => true, "");

    static Rule OnlyNull(string refusal) => new(v => v.ValueKind == JsonValueKind.Null, refusal);

    static Rule Only(string offJson, string refusal)
    {
        var off = JsonDocument.Parse(offJson).RootElement.Clone();
        return new(v => v.ValueKind == JsonValueKind.Null || JsonElement.DeepEquals(v, off), refusal);
    }

    static Rule OnlyEmpty(string refusal) => new(v => v.ValueKind == JsonValueKind.Null || (v.ValueKind == JsonValueKind.Array && v.GetArrayLength() == 0), refusal);

    const string NoStructuredOutputs = "is not supported: structured outputs (guided decoding) are not built.";
    const string NoTools = "is not supported: tool calling is not built.";
    const string NoMultimodal = "is not supported: the model reads text only.";

    static readonly Dictionary<string, Rule> s_rules = new(StringComparer.Ordinal)
    {
        // Harmless by definition: identifiers and bookkeeping with no effect on the output.
        ["user"] = Harmless,
        ["metadata"] = Harmless,
        ["safety_identifier"] = Harmless,
        ["prompt_cache_key"] = Harmless,
        ["parallel_tool_calls"] = Harmless, // no tool is ever called
        ["include_reasoning"] = Harmless, // no reasoning parser: there is no separate reasoning to include or drop
        ["service_tier"] = new(v => v.ValueKind == JsonValueKind.Null || v.ValueKind == JsonValueKind.String && v.GetString() is "auto" or "default",
            "is not supported: there is one service tier ('auto' or 'default')."),

        // Features not built: accepted only when off.
        ["store"] = Only("false", "is not supported: completions are not stored."),
        ["suffix"] = OnlyNull("is not currently supported."),
        ["response_format"] = Only("""{"type": "text"}""", "is not supported except {\"type\": \"text\"}: structured outputs are not built."),
        ["structured_outputs"] = OnlyNull(NoStructuredOutputs),
        ["guided_json"] = OnlyNull(NoStructuredOutputs),
        ["guided_regex"] = OnlyNull(NoStructuredOutputs),
        ["guided_choice"] = OnlyNull(NoStructuredOutputs),
        ["guided_grammar"] = OnlyNull(NoStructuredOutputs),
        ["guided_decoding_backend"] = OnlyNull(NoStructuredOutputs),
        ["guided_whitespace_pattern"] = OnlyNull(NoStructuredOutputs),
        ["structural_tag"] = OnlyNull(NoStructuredOutputs),
        ["tools"] = OnlyEmpty(NoTools),
        ["tool_choice"] = Only("\"none\"", NoTools),
        ["functions"] = OnlyEmpty(NoTools),
        ["function_call"] = Only("\"none\"", NoTools),
        ["use_beam_search"] = Only("false", "is not supported: beam search is not built."),
        ["length_penalty"] = Only("1", "is not supported: it applies to beam search, which is not built."),
        ["allowed_token_ids"] = OnlyNull("is not supported; use logit_bias."),
        ["bad_words"] = OnlyEmpty("is not supported; use logit_bias or stop."),
        ["logprob_token_ids"] = OnlyNull("is not supported; use logprobs."),
        ["logits_processors"] = OnlyNull("is not supported: custom logits processors are not built."),
        ["priority"] = Only("0", "is not supported: priority scheduling is not enabled."),
        ["spaces_between_special_tokens"] = Only("true", "is not supported: special tokens are always joined as the tokenizer decodes them."),
        ["stream_interval"] = Only("1", "is not supported: every step is streamed."),
        ["chat_template"] = OnlyNull("is not supported: a chat template passed with a request is not trusted; the model's own template is used."),
        ["modalities"] = Only("[\"text\"]", NoMultimodal),
        ["audio"] = OnlyNull(NoMultimodal),
        ["prompt_embeds"] = OnlyNull("is not supported: prompts are text or token ids."),
        ["mm_processor_kwargs"] = OnlyNull(NoMultimodal),
        ["media_io_kwargs"] = OnlyNull(NoMultimodal),
        ["prediction"] = OnlyNull("is not supported: predicted outputs are not built."),
        ["web_search_options"] = OnlyNull("is not supported: there is no web search."),
        ["reasoning"] = OnlyNull("is not supported: the model does not reason separately."),
        ["verbosity"] = OnlyNull("is not supported."),
        ["thinking_token_budget"] = OnlyNull("is not supported: the model does not reason separately."),
        ["repetition_detection"] = OnlyNull("is not supported."),
        ["watermarking"] = Only("false", "is not supported."),
        ["kv_transfer_params"] = OnlyNull("is not supported: there is no disaggregated serving."),
        ["ec_transfer_params"] = OnlyNull("is not supported: there is no disaggregated serving."),
        ["vllm_xargs"] = OnlyNull("is not supported: there are no extensions to read it."),
    };

    /// <summary>The fields of the table with whether each is harmless (else accepted only when off).</summary>
    public static IEnumerable<(string Name, bool Harmless)> Table => s_rules.Select(r => (r.Key, r.Value.Refusal == ""));

    /// <summary>null when every unrecognized field is harmless or off; else a 400 naming the first one refused.</summary>
    public static IResult? Check(IHasUnrecognizedFields request)
    {
        foreach (var (name, value) in request.Unrecognized ?? [])
        {
            if (!s_rules.TryGetValue(name, out var rule)) return ApiErrors.BadRequest($"Unrecognized request argument supplied: {name}", name);
            if (!rule.Accepts(value)) return ApiErrors.BadRequest($"{name} {rule.Refusal}", name);
        }
        return null;
    }

    /// <summary>Nested objects (a message, stream_options) take only their declared fields.</summary>
    public static void CheckNested(IHasUnrecognizedFields? value, string path)
    {
        if (value?.Unrecognized is { Count: > 0 } extra)
        {
            string name = $"{path}.{extra.Keys.First()}";
            throw new BadRequestException($"Unrecognized request argument supplied: {name}", name);
        }
    }
}
