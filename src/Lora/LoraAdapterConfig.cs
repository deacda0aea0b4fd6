using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace LoraEngine.Lora;

/// <summary>
/// The fields of PEFT's <c>adapter_config.json</c> that LoraEngine reads. Unknown keys are ignored (as vLLM does).
/// </summary>
public sealed record LoraAdapterConfig
{
    public required int Rank { get; init; }
    public required double Alpha { get; init; }
    public bool UseRslora { get; init; }
    /// <summary>Module-name suffixes, or null when <see cref="TargetModulesRegex"/> is given.</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }
    /// <summary>A regex matched against the full module name (PEFT's re.fullmatch), when target_modules is a string.</summary>
    public string? TargetModulesRegex { get; init; }
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    public bool FanInFanOut { get; init; }
    public bool UseDora { get; init; }
    public string Bias { get; init; } = "none";
    public IReadOnlyList<string>? ModulesToSave { get; init; }
    public string PeftType { get; init; } = "LORA";

    /// <summary>Parses the JSON; a missing or garbled field is an InvalidDataException naming it.</summary>
    public static LoraAdapterConfig Parse(string json)
    {
        JsonObject o;
        try
        {
            o = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException("adapter_config.json is not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"adapter_config.json is not valid JSON ({e.Message})", e);
        }
        var missing = new[] { "r", "lora_alpha", "target_modules" }.Where(k => o[k] is null).ToArray();
        if (missing.Length > 0) throw new InvalidDataException($"Missing required configuration fields: {string.Join(", ", missing)}");
        try
        {
            var targets = o["target_modules"]!;
            string? regex = targets.GetValueKind() == JsonValueKind.String ? targets.GetValue<string>() : null;
            if (regex != null) _ = new Regex(regex); // a bad pattern is a config fault
            return new LoraAdapterConfig
            {
                Rank = o["r"]!.GetValue<int>(),
                Alpha = o["lora_alpha"]!.GetValue<double>(),
                UseRslora = o["use_rslora"]?.GetValue<bool>() ?? false,
                TargetModules = regex is null ? targets.AsArray().Select(t => t!.GetValue<string>()).ToArray() : null,
                TargetModulesRegex = regex,
                RankPattern = (o["rank_pattern"] as JsonObject)?.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>()) ?? new(),
                AlphaPattern = (o["alpha_pattern"] as JsonObject)?.ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>()) ?? new(),
                LayersToTransform = o["layers_to_transform"] switch
                {
                    null => null,
                    JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
                    JsonValue v when v.GetValueKind() == JsonValueKind.Null => null,
                    JsonValue v => [v.GetValue<int>()],
                    _ => throw new InvalidDataException("layers_to_transform must be an integer or a list of integers"),
                },
                FanInFanOut = o["fan_in_fan_out"]?.GetValue<bool>() ?? false,
                UseDora = o["use_dora"]?.GetValue<bool>() ?? false,
                Bias = o["bias"]?.GetValue<string>() ?? "none",
                ModulesToSave = o["modules_to_save"] is JsonArray m ? m.Select(x => x!.GetValue<string>()).ToArray() : null,
                PeftType = o["peft_type"]?.GetValue<string>() ?? "LORA",
            };
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or NullReferenceException)
        {
            throw new InvalidDataException($"adapter_config.json has a field of the wrong type ({e.Message})", e);
        }
    }

    /// <summary>Does the config target this module (full name model.layers.{i}.{block}.{proj})?</summary>
    public bool Targets(string fullName, int layer)
    {
        if (LayersToTransform is { } layers && !layers.Contains(layer)) return false;
        if (TargetModulesRegex is { } regex) return Regex.IsMatch(fullName, $"^(?:{regex})$");
        return TargetModules!.Any(t => fullName == t || fullName.EndsWith("." + t, StringComparison.Ordinal));
    }

    /// <summary>Rank and alpha of one module after rank_pattern / alpha_pattern (PEFT: first key matching the name's end).</summary>
    public (int Rank, double Alpha) RankAndAlpha(string fullName) =>
        (Pattern(RankPattern, fullName) ?? Rank, Pattern(AlphaPattern, fullName) ?? Alpha);

    static T? Pattern<T>(IReadOnlyDictionary<string, T> patterns, string fullName) where T : struct
    {
        foreach (var (key, value) in patterns)
            if (Regex.IsMatch(fullName, $"(.*\\.)?(?:{key})$")) return value;
        return null;
    }

    /// <summary>alpha / r, or alpha / sqrt(r) with rsLoRA.</summary>
    public double Scale(int rank, double alpha) => UseRslora ? alpha / Math.Sqrt(rank) : alpha / rank;
}
