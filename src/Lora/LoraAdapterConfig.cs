using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace LoraEngine.Lora;

/// <summary>
/// The fields of PEFT's <c>adapter_config.json</c> that LoraEngine reads. Unknown keys are ignored (as vLLM does).
/// </summary>
public sealed record LoraAdapterConfig
{
    /// <summary>r: the rank of every module that rank_pattern does not name.</summary>
    public required int Rank { get; init; }
    /// <summary>lora_alpha: the scale numerator of every module that alpha_pattern does not name (scale = alpha / r).</summary>
    public required double Alpha { get; init; }
    /// <summary>use_rslora: rank-stabilised LoRA, scale = alpha / sqrt(r).</summary>
    public bool UseRslora { get; init; }
    /// <summary>Module-name suffixes, or null when <see cref="TargetModulesRegex"/> is given.</summary>
    public IReadOnlyList<string>? TargetModules { get; init; }
    /// <summary>A regex matched against the full module name (PEFT's re.fullmatch), when target_modules is a string.</summary>
    public string? TargetModulesRegex { get; init; }
    /// <summary>rank_pattern: module-name regex → rank overriding <see cref="Rank"/> (PEFT: the first key matching whole dotted parts at the name's end).</summary>
    public IReadOnlyDictionary<string, int> RankPattern { get; init; } = new Dictionary<string, int>();
    /// <summary>alpha_pattern: module-name regex → alpha overriding <see cref="Alpha"/>, matched as <see cref="RankPattern"/>.</summary>
    public IReadOnlyDictionary<string, double> AlphaPattern { get; init; } = new Dictionary<string, double>();
    /// <summary>exclude_modules as a list: module-name suffixes never targeted (PEFT: exact name or "." + suffix), or null.</summary>
    public IReadOnlyList<string>? ExcludeModules { get; init; }
    /// <summary>exclude_modules as a string: a regex matched against the full module name (re.fullmatch), or null.</summary>
    public string? ExcludeModulesRegex { get; init; }
    /// <summary>layers_to_transform: the only layers targeted; null: every layer.</summary>
    public IReadOnlyList<int>? LayersToTransform { get; init; }
    /// <summary>
    /// layers_pattern: the name of the layer list that <see cref="LayersToTransform"/> indexes (PEFT reads it only with
    /// layers_to_transform; null: PEFT's common names, layers, h, block, blocks, layer). A Llama's list is "layers": a
    /// pattern that names another list targets nothing, as in PEFT.
    /// </summary>
    public IReadOnlyList<string>? LayersPattern { get; init; }

    /// <summary>PEFT's COMMON_LAYERS_PATTERN: the layer lists layers_to_transform indexes when no layers_pattern is given.</summary>
    static readonly string[] CommonLayersPatterns = ["layers", "h", "block", "blocks", "layer"];
    /// <summary>
    /// fan_in_fan_out: how the base layer stores its weight (GPT-2's Conv1D). It matters to PEFT only when merging; lora_A and
    /// lora_B keep their shapes and are applied unmerged here, so it changes nothing.
    /// </summary>
    public bool FanInFanOut { get; init; }
    /// <summary>use_dora: DoRA adapters are refused.</summary>
    public bool UseDora { get; init; }
    /// <summary>bias: only "none" is accepted (adapter biases are refused).</summary>
    public string Bias { get; init; } = "none";
    /// <summary>modules_to_save: fully trained modules stored beside the adapter; refused unless null or empty, as vLLM does.</summary>
    public IReadOnlyList<string>? ModulesToSave { get; init; }
    /// <summary>peft_type: only "LORA" is accepted.</summary>
    public string PeftType { get; init; } = "LORA";

    /// <summary>Longest a target_modules, rank_pattern or alpha_pattern regex may run on one module name.</summary>
    public static readonly TimeSpan RegexTimeout = TimeSpan.FromMilliseconds(200);

    /// <summary>
    /// Parses the JSON; a missing or garbled field is an InvalidDataException naming it. Messages never quote the
    /// file: a syntax error is given by position, a field of the wrong type by its name.
    /// </summary>
    public static LoraAdapterConfig Parse(string json)
    {
        JsonObject o;
        try
        {
            o = JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException("adapter_config.json is not a JSON object");
            _ = o.Count; // JsonObject reads its properties lazily: a key given twice throws here, not at the first lookup
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException("adapter_config.json names a field twice", e);
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"adapter_config.json is not valid JSON (line {e.LineNumber + 1}, byte {e.BytePositionInLine + 1})", e);
        }
        var missing = new[] { "r", "lora_alpha", "target_modules" }.Where(k => o[k] is null).ToArray();
        if (missing.Length > 0) throw new InvalidDataException($"Missing required configuration fields: {string.Join(", ", missing)}");

        // PEFT fields that change what the adapter computes and that LoraEngine does not implement: refused unless
        // absent, null or false, never applied as plain LoRA.
        foreach (var (key, what) in Unsupported)
            if (o[key] is { } node && !(node.GetValueKind() == JsonValueKind.False))
                throw new InvalidDataException($"adapter_config.json: {key} ({what}) is not supported");
        var (targets, targetsRegex) = Modules(o, "target_modules");
        var (excluded, excludedRegex) = Modules(o, "exclude_modules");
        var config = new LoraAdapterConfig
        {
            ExcludeModules = excluded,
            ExcludeModulesRegex = excludedRegex,
            Rank = Field(o, "r", "an integer", v => v.GetValue<int>()),
            Alpha = Field(o, "lora_alpha", "a number", v => v.GetValue<double>()),
            UseRslora = Field(o, "use_rslora", "true or false", v => v.GetValue<bool>(), false),
            TargetModules = targets,
            TargetModulesRegex = targetsRegex,
            RankPattern = Field(o, "rank_pattern", "an object of integers", v => v.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<int>()), new()),
            AlphaPattern = Field(o, "alpha_pattern", "an object of numbers", v => v.AsObject().ToDictionary(kv => kv.Key, kv => kv.Value!.GetValue<double>()), new()),
            LayersToTransform = Field(o, "layers_to_transform", "an integer or a list of integers", v => v switch
            {
                JsonArray a => a.Select(x => x!.GetValue<int>()).ToArray(),
                _ => (int[])[v.GetValue<int>()],
            }),
            LayersPattern = Field(o, "layers_pattern", "a string or a list of strings", v => v.GetValueKind() == JsonValueKind.String
                ? (string[])[v.GetValue<string>()] : v.AsArray().Select(x => x!.GetValue<string>()).ToArray()),
            FanInFanOut = Field(o, "fan_in_fan_out", "true or false", v => v.GetValue<bool>(), false),
            UseDora = Field(o, "use_dora", "true or false", v => v.GetValue<bool>(), false),
            Bias = Field(o, "bias", "a string", v => v.GetValue<string>(), "none"),
            ModulesToSave = Field(o, "modules_to_save", "a list of strings", v => v.AsArray().Select(x => x!.GetValue<string>()).ToArray()),
            PeftType = Field(o, "peft_type", "a string", v => v.GetValue<string>(), "LORA"),
        };
        foreach (var (field, keys) in new[] { ("rank_pattern", config.RankPattern.Keys), ("alpha_pattern", config.AlphaPattern.Keys) })
            if (!keys.All(IsRegex)) throw new InvalidDataException($"adapter_config.json: a key of {field} is not a valid regular expression");
        return config;
    }

    static readonly (string Key, string What)[] Unsupported =
    [
        ("alora_invocation_tokens", "activated LoRA: the adapter acts only after the invocation tokens"),
        ("layer_replication", "replicated base layers"),
        ("use_qalora", "QA-LoRA: lora_A reads pooled inputs"),
        ("arrow_config", "Arrow routing between LoRA experts"),
    ];

    /// <summary>A module selector as PEFT takes it (target_modules, exclude_modules): a list of name suffixes, or one regex.</summary>
    static (string[]? List, string? Regex) Modules(JsonObject o, string key)
    {
        const string Expected = "a string or a list of strings";
        string? regex = Field(o, key, Expected, t => t.GetValueKind() == JsonValueKind.String ? t.GetValue<string>() : null);
        if (regex != null && !IsRegex(regex)) throw new InvalidDataException($"adapter_config.json: {key} is not a valid regular expression");
        return (regex is null ? Field(o, key, Expected, t => t.AsArray().Select(x => x!.GetValue<string>()).ToArray()) : null, regex);
    }

    /// <summary>A field read with <paramref name="read"/>; absent or JSON null gives <paramref name="absent"/>.</summary>
    static T Field<T>(JsonObject o, string key, string expected, Func<JsonNode, T> read, T absent = default!)
    {
        var node = o[key];
        if (node is null) return absent;
        try
        {
            return read(node);
        }
        catch (ArgumentException e) when (node is JsonObject) // its properties are read lazily: a key given twice throws here
        {
            throw new InvalidDataException($"adapter_config.json: field '{key}' names a key twice", e);
        }
        catch (Exception e) when (e is InvalidOperationException or FormatException or ArgumentException or NullReferenceException)
        {
            throw new InvalidDataException($"adapter_config.json: field '{key}' has the wrong type (expected {expected})", e);
        }
    }

    static bool IsRegex(string pattern)
    {
        try
        {
            _ = new Regex(pattern, RegexOptions.None, RegexTimeout);
            return true;
        }
        catch (ArgumentException)
        {
            return false;
        }
    }

    /// <summary>Does the config target this module (full name model.layers.{i}.{block}.{proj}, <paramref name="layer"/> its i)?</summary>
    public bool Targets(string fullName, int layer) => WhyNotTargeted(fullName, layer) is null;

    /// <summary>
    /// Which field leaves the module untargeted, in PEFT's order (exclude_modules first, then the layers, then
    /// target_modules), as the words of a refusal ("exclude_modules excludes"); null when the config targets it.
    /// </summary>
    public string? WhyNotTargeted(string fullName, int layer)
    {
        if (Names(ExcludeModules, ExcludeModulesRegex, fullName)) return "exclude_modules excludes";
        if (LayersToTransform is { } layers)
        {
            // PEFT's re.match(rf".*.{pattern}\.(\d+)\.*", key): with no pattern naming the module's layer list, nothing is targeted.
            if (!(LayersPattern ?? CommonLayersPatterns).Any(p => Regex.IsMatch(fullName, $@"^.*.{p}\.\d+", RegexOptions.None, RegexTimeout)))
                return "layers_pattern does not name its layer list (layers)";
            if (!layers.Contains(layer)) return "layers_to_transform does not include";
        }
        return Names(TargetModules, TargetModulesRegex, fullName) ? null : "target_modules does not include";
    }

    /// <summary>
    /// A module selector's match, as PEFT's: the regex against the whole name (re.fullmatch), else a list entry equal to
    /// the name or to a dotted suffix of it; false for a selector not given.
    /// </summary>
    static bool Names(IReadOnlyList<string>? list, string? regex, string fullName) => regex is not null
        ? Regex.IsMatch(fullName, $"^(?:{regex})$", RegexOptions.None, RegexTimeout)
        : list?.Any(t => fullName == t || fullName.EndsWith("." + t, StringComparison.Ordinal)) ?? false;

    /// <summary>
    /// Rank and alpha of one module after rank_pattern / alpha_pattern: PEFT's get_pattern_key, the first key with
    /// re.match(rf"(.*\.)?({key})$", name) — whole dotted parts at the end ("q_proj", "layers.0.self_attn.q_proj"), not any suffix.
    /// </summary>
    public (int Rank, double Alpha) RankAndAlpha(string fullName) =>
        (Pattern(RankPattern, fullName) ?? Rank, Pattern(AlphaPattern, fullName) ?? Alpha);

    static T? Pattern<T>(IReadOnlyDictionary<string, T> patterns, string fullName) where T : struct
    {
        foreach (var (key, value) in patterns)
            if (Regex.IsMatch(fullName, $"^(.*\\.)?(?:{key})$", RegexOptions.None, RegexTimeout)) return value; // Python's re.match anchors at the start
        return null;
    }

    /// <summary>alpha / r, or alpha / sqrt(r) with rsLoRA.</summary>
    public double Scale(int rank, double alpha) => UseRslora ? alpha / Math.Sqrt(rank) : alpha / rank;
}
