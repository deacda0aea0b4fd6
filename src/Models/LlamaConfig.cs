using System.Text.Json;
using System.Text.Json.Nodes;
using LoraEngine.Tensors;

namespace LoraEngine.Models;

/// <summary>
/// A Llama model's <c>config.json</c>, in the transformers 5 layout (<c>rope_parameters</c>, <c>dtype</c>) or the
/// classic one (<c>rope_theta</c>, <c>rope_scaling</c>, <c>torch_dtype</c>), with <c>generation_config.json</c>
/// overriding bos/eos when present. Derived sizes are properties.
/// </summary>
public sealed record LlamaConfig
{
    /// <summary>hidden_size: width of the residual stream (the embedding dimension).</summary>
    public required int HiddenSize { get; init; }
    /// <summary>intermediate_size: width of the MLP's gate and up projections.</summary>
    public required int IntermediateSize { get; init; }
    /// <summary>num_hidden_layers: decoder layers.</summary>
    public required int NumHiddenLayers { get; init; }
    /// <summary>num_attention_heads: query heads.</summary>
    public required int NumAttentionHeads { get; init; }
    /// <summary>num_key_value_heads: key/value heads (grouped-query attention); divides <see cref="NumAttentionHeads"/>. Default: as many as the query heads.</summary>
    public required int NumKeyValueHeads { get; init; }
    /// <summary>head_dim: width of one head, even (RoPE rotates pairs). Default hidden_size / num_attention_heads.</summary>
    public required int HeadDim { get; init; }
    /// <summary>vocab_size: rows of the embedding table and of the logits (may exceed the tokenizer's vocabulary: padding).</summary>
    public required int VocabSize { get; init; }
    /// <summary>max_position_embeddings: the context length the model was trained for. Default 2048.</summary>
    public required int MaxPositionEmbeddings { get; init; }
    /// <summary>rms_norm_eps: the epsilon of every RMSNorm. Default 1e-6.</summary>
    public required double RmsNormEps { get; init; }
    /// <summary>rope_theta: the RoPE base frequency. Default 10000.</summary>
    public required double RopeTheta { get; init; }
    /// <summary>Llama 3's rope scaling (rope_type "llama3"); null for plain RoPE.</summary>
    public Llama3RopeScaling? RopeScaling { get; init; }
    /// <summary>tie_word_embeddings: the output projection (lm_head) is the embedding table itself.</summary>
    public bool TieWordEmbeddings { get; init; }
    /// <summary>The stored dtype name ("float32", "bfloat16", ...), when the config gives one.</summary>
    public string? TorchDtype { get; init; }
    /// <summary>bos_token_id (generation_config.json's first, else config.json's), when given.</summary>
    public int? BosTokenId { get; init; }
    /// <summary>eos_token_id as a list (generation_config.json's first, else config.json's): any of them ends a sequence.</summary>
    public IReadOnlyList<int> EosTokenIds { get; init; } = [];
    /// <summary>architectures: LlamaForCausalLM or LlamaModel (any other is refused on parse).</summary>
    public IReadOnlyList<string> Architectures { get; init; } = [];

    /// <summary>Width of the query projection: heads × head_dim (may differ from hidden).</summary>
    public int QSize => NumAttentionHeads * HeadDim;

    /// <summary>Width of the key and value projections: kv heads × head_dim.</summary>
    public int KvSize => NumKeyValueHeads * HeadDim;

    /// <summary>
    /// Throws <see cref="ArgumentOutOfRangeException"/> (parameter "TensorParallelSize") naming the width that
    /// <paramref name="worldSize"/> ranks cannot split evenly: query heads, key/value heads (each rank keeps whole GQA
    /// groups, so KV heads are split too, never replicated) or the MLP's intermediate size.
    /// </summary>
    public void CheckTensorParallel(int worldSize)
    {
        const string field = "TensorParallelSize";
        if (worldSize <= 0) throw new ArgumentOutOfRangeException(field, worldSize, $"{field} must be positive, got {worldSize}");
        foreach (var (name, value) in new[] { ("num_attention_heads", NumAttentionHeads), ("num_key_value_heads", NumKeyValueHeads), ("intermediate_size", IntermediateSize) })
            if (value % worldSize != 0)
                throw new ArgumentOutOfRangeException(field, worldSize, $"{field} ({worldSize}) does not divide the model's {name} ({value}): every rank must hold an equal share");
    }

    /// <summary>
    /// The widths one of <paramref name="worldSize"/> tensor-parallel ranks holds: its query heads, its key/value heads
    /// and its share of the MLP columns (hidden size, head_dim, vocabulary and layers unchanged). Itself for one rank.
    /// </summary>
    public LlamaConfig ShardFor(int worldSize)
    {
        CheckTensorParallel(worldSize);
        return worldSize == 1 ? this : this with
        {
            NumAttentionHeads = NumAttentionHeads / worldSize,
            NumKeyValueHeads = NumKeyValueHeads / worldSize,
            IntermediateSize = IntermediateSize / worldSize,
        };
    }

    /// <summary>Reads config.json (and generation_config.json when present) from a model folder.</summary>
    public static LlamaConfig Load(string modelDir)
    {
        string path = Path.Combine(modelDir, "config.json");
        if (!File.Exists(path)) throw new FileNotFoundException($"{modelDir}: no config.json", path);
        string gen = Path.Combine(modelDir, "generation_config.json");
        return Parse(File.ReadAllText(path), File.Exists(gen) ? File.ReadAllText(gen) : null, path);
    }

    /// <summary>Parses config.json's text (and generation_config.json's, which overrides bos/eos).</summary>
    /// <param name="configJson">config.json's text.</param>
    /// <param name="generationConfigJson">generation_config.json's text, or null when there is none.</param>
    /// <param name="source">The name messages give the config (usually its path).</param>
    /// <exception cref="InvalidDataException">Malformed JSON, or a field missing, of the wrong type or out of range; the message names it.</exception>
    /// <exception cref="NotSupportedException">An architecture, model_type or rope type other than Llama's.</exception>
    public static LlamaConfig Parse(string configJson, string? generationConfigJson = null, string source = "config.json")
    {
        JsonObject c = ParseObject(configJson, source);
        JsonObject? g = generationConfigJson is null ? null : ParseObject(generationConfigJson, "generation_config.json");

        var architectures = c["architectures"] is JsonArray a ? a.Select(x => x?.ToString() ?? "").ToArray() : [];
        foreach (var arch in architectures)
            if (arch is not ("LlamaForCausalLM" or "LlamaModel"))
                throw new NotSupportedException($"{source}: architecture '{arch}' is not supported (only LlamaForCausalLM)");
        if (c["model_type"] is JsonValue mt && mt.ToString() is var type && type != "llama")
            throw new NotSupportedException($"{source}: model_type '{type}' is not supported (only llama)");

        int hidden = Int(c, "hidden_size", source);
        int heads = Int(c, "num_attention_heads", source);
        int kvHeads = c["num_key_value_heads"] is null ? heads : Int(c, "num_key_value_heads", source);
        if (heads % kvHeads != 0) throw new InvalidDataException($"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kvHeads}");
        int headDim = c["head_dim"] is null ? hidden / heads : Int(c, "head_dim", source);
        if (c["head_dim"] is null && hidden % heads != 0) throw new InvalidDataException($"{source}: hidden_size {hidden} is not a multiple of num_attention_heads {heads}");
        if (headDim % 2 != 0) throw new InvalidDataException($"{source}: head_dim {headDim} must be even for RoPE");

        // Rope: transformers 5 keeps theta and scaling together in rope_parameters; classic configs split them.
        JsonObject? rope = c["rope_parameters"] as JsonObject ?? c["rope_scaling"] as JsonObject;
        double theta = rope?["rope_theta"] is not null ? Double(rope, "rope_theta", source)
            : c["rope_theta"] is not null ? Double(c, "rope_theta", source) : 10000.0;

        return new LlamaConfig
        {
            HiddenSize = hidden,
            IntermediateSize = Int(c, "intermediate_size", source),
            NumHiddenLayers = Int(c, "num_hidden_layers", source),
            NumAttentionHeads = heads,
            NumKeyValueHeads = kvHeads,
            HeadDim = headDim,
            VocabSize = Int(c, "vocab_size", source),
            MaxPositionEmbeddings = c["max_position_embeddings"] is null ? 2048 : Int(c, "max_position_embeddings", source),
            RmsNormEps = c["rms_norm_eps"] is null ? 1e-6 : Double(c, "rms_norm_eps", source),
            RopeTheta = theta,
            RopeScaling = ParseRopeScaling(rope, source),
            TieWordEmbeddings = c["tie_word_embeddings"] is JsonValue tie && tie.GetValueKind() == JsonValueKind.True,
            TorchDtype = (c["dtype"] ?? c["torch_dtype"])?.ToString(),
            BosTokenId = TokenIds(g?["bos_token_id"] ?? c["bos_token_id"], "bos_token_id", source).Cast<int?>().FirstOrDefault(),
            EosTokenIds = TokenIds(g?["eos_token_id"] ?? c["eos_token_id"], "eos_token_id", source),
            Architectures = architectures,
        };
    }

    /// <summary>The stored weight dtype named by the config, if any.</summary>
    public DType? StoredDType => TorchDtype switch
    {
        "float32" => DType.F32,
        "float16" => DType.F16,
        "bfloat16" => DType.BF16,
        _ => null,
    };

    static Llama3RopeScaling? ParseRopeScaling(JsonObject? rope, string source)
    {
        if (rope is null) return null;
        string type = (rope["rope_type"] ?? rope["type"])?.ToString() ?? "default";
        return type switch
        {
            "default" => null,
            "llama3" => new Llama3RopeScaling(
                Double(rope, "factor", source), Double(rope, "low_freq_factor", source), Double(rope, "high_freq_factor", source),
                Int(rope, "original_max_position_embeddings", source)),
            _ => throw new NotSupportedException($"{source}: rope type '{type}' is not supported (default and llama3 are)"),
        };
    }

    static IReadOnlyList<int> TokenIds(JsonNode? node, string field, string source)
    {
        try
        {
            return node switch
            {
                null => [],
                JsonArray list => list.Select(x => x!.GetValue<int>()).ToArray(),
                JsonValue v when v.GetValueKind() == JsonValueKind.Null => [],
                _ => [node.GetValue<int>()],
            };
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException or NullReferenceException)
        {
            throw new InvalidDataException($"{source}: {field} must be an integer or a list of integers", e);
        }
    }

    static JsonObject ParseObject(string json, string source)
    {
        try
        {
            return JsonNode.Parse(json) as JsonObject ?? throw new InvalidDataException($"{source}: not a JSON object");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{source}: not valid JSON ({e.Message})", e);
        }
    }

    static int Int(JsonObject o, string field, string source)
    {
        try
        {
            int v = o[field]?.GetValue<int>() ?? throw new InvalidDataException($"{source}: missing field '{field}'");
            return v > 0 ? v : throw new InvalidDataException($"{source}: {field} must be positive, got {v}");
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{source}: field '{field}' must be an integer", e);
        }
    }

    static double Double(JsonObject o, string field, string source)
    {
        try
        {
            double v = o[field]?.GetValue<double>() ?? throw new InvalidDataException($"{source}: missing field '{field}'");
            return v > 0 && double.IsFinite(v) ? v : throw new InvalidDataException($"{source}: {field} must be positive, got {v}");
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new InvalidDataException($"{source}: field '{field}' must be a number", e);
        }
    }
}
