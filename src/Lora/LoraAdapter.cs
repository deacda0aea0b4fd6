using System.Buffers.Binary;
using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using LoraEngine.Models;
using LoraEngine.Models.Safetensors;

namespace LoraEngine.Lora;

/// <summary>One projection's adapter weights on the host: A [rank, in], B [out, rank] as F32, and its scale.</summary>
public sealed record LoraLayerWeights(int Layer, LoraModule Module, int Rank, float Scale, float[] A, float[] B);

/// <summary>
/// A PEFT LoRA adapter read from <c>adapter_config.json</c> + <c>adapter_model.safetensors</c> into host memory.
/// Everything is checked before anything is allocated on a device (llama.cpp's loader order); every refusal is a
/// <see cref="LoraException"/> naming the adapter and the fault, with vLLM's texts where vLLM has one.
/// </summary>
public sealed partial class LoraAdapter
{
    LoraAdapter(string name, string path, LoraAdapterConfig config, IReadOnlyList<LoraLayerWeights> weights)
    {
        Name = name;
        Path = path;
        Config = config;
        Weights = weights;
        ContentHash = HashContent(weights);
    }

    /// <summary>The adapter's name (vLLM's lora_name), as the load was given it.</summary>
    public string Name { get; }

    /// <summary>The adapter folder as the load was given it (not resolved).</summary>
    public string Path { get; }

    /// <summary>Its adapter_config.json.</summary>
    public LoraAdapterConfig Config { get; }

    /// <summary>One entry per targeted (layer, projection), ordered by layer then projection.</summary>
    public IReadOnlyList<LoraLayerWeights> Weights { get; }

    /// <summary>The largest rank over the adapter's modules.</summary>
    public int MaxRank => Weights.Count == 0 ? 0 : Weights.Max(w => w.Rank);

    /// <summary>The projections the adapter has weights for, in any layer.</summary>
    public IReadOnlySet<LoraModule> TargetModules => Weights.Select(w => w.Module).ToHashSet();

    /// <summary>
    /// Tells loads apart: every load (a reload after eviction from the CPU cache, or an in-place reload) is a new
    /// instance with a new serial, so a GPU slot knows whether it holds exactly this copy of the weights.
    /// </summary>
    public long Serial { get; } = Interlocked.Increment(ref s_serials);

    static long s_serials;

    /// <summary>
    /// The adapter's content identity: SHA-256 (first 128 bits) of what its requests compute with — every module's
    /// layer, projection, rank, scale and A and B values as validated. Not its name, path or id: a reload with new
    /// weights gets a new identity, two names with the same content share one. Computed once, when the adapter is read.
    /// The prefix cache keys adapter requests' KV blocks by it.
    /// </summary>
    public UInt128 ContentHash { get; }

    static UInt128 HashContent(IReadOnlyList<LoraLayerWeights> weights)
    {
        using var sha = IncrementalHash.CreateHash(HashAlgorithmName.SHA256);
        Span<byte> header = stackalloc byte[24];
        foreach (var w in weights)
        {
            BinaryPrimitives.WriteInt32LittleEndian(header, w.Layer);
            BinaryPrimitives.WriteInt32LittleEndian(header[4..], (int)w.Module);
            BinaryPrimitives.WriteInt32LittleEndian(header[8..], w.Rank);
            BinaryPrimitives.WriteSingleLittleEndian(header[12..], w.Scale);
            BinaryPrimitives.WriteInt32LittleEndian(header[16..], w.A.Length);
            BinaryPrimitives.WriteInt32LittleEndian(header[20..], w.B.Length);
            sha.AppendData(header);
            sha.AppendData(MemoryMarshal.AsBytes(w.A.AsSpan()));
            sha.AppendData(MemoryMarshal.AsBytes(w.B.AsSpan()));
        }
        Span<byte> digest = stackalloc byte[32];
        sha.GetHashAndReset(digest);
        return BinaryPrimitives.ReadUInt128LittleEndian(digest);
    }

    /// <summary>Host bytes of the weights (F32).</summary>
    public long SizeInBytes => Weights.Sum(w => 4L * (w.A.Length + w.B.Length));

    [GeneratedRegex(@"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_(A|B)\.weight$")]
    private static partial Regex TensorName();

    /// <summary>Reads and validates an adapter for <paramref name="model"/>; throws <see cref="LoraException"/> on any fault.</summary>
    public static LoraAdapter Load(string name, string path, LlamaConfig model, int maxLoraRank) => Load(name, path, model, maxLoraRank, loraRoot: null);

    /// <summary>Largest adapter_config.json read (a PEFT config is a few hundred bytes).</summary>
    public const long MaxConfigBytes = 1 << 20;

    /// <summary>
    /// Reads and validates an adapter; throws <see cref="LoraException"/> on any fault. With <paramref name="loraRoot"/>,
    /// the folder and each file are resolved to their real paths at this read (symbolic links followed) and must lie
    /// inside the real root; the files are then read from those checked paths. Every check runs before anything is
    /// kept: shapes, dtypes, ranks and that every weight is finite (a NaN or infinity is refused, naming the tensor).
    /// No message shows content of a file beyond names (see <see cref="LoraException.Quote"/>).
    /// </summary>
    public static LoraAdapter Load(string name, string path, LlamaConfig model, int maxLoraRank, string? loraRoot)
    {
        LoraException Fault(string what, Exception? inner = null) => new(name, path, what, inner);

        if (string.IsNullOrWhiteSpace(path)) throw Fault("lora_path cannot be empty");
        var files = AdapterFiles.Locate(path, loraRoot, Fault);
        if (!Directory.Exists(files.Folder)) throw Fault($"No adapter found for {path}");
        string configPath = files.File("adapter_config.json");
        string weightsPath = files.File("adapter_model.safetensors");
        if (!File.Exists(configPath)) throw Fault($"No adapter found for {path}: adapter_config.json is missing");
        if (!File.Exists(weightsPath))
            throw Fault(File.Exists(files.File("adapter_model.bin"))
                ? "adapter_model.bin (pickled PyTorch) is not supported: convert the adapter to adapter_model.safetensors"
                : Directory.Exists(files.Folder) ? "adapter_model.safetensors is missing" : $"No adapter found for {path}");

        LoraAdapterConfig config;
        try
        {
            long size = new FileInfo(configPath).Length;
            if (size > MaxConfigBytes) throw new InvalidDataException($"adapter_config.json has {size} bytes, more than the {MaxConfigBytes} a config may have");
            config = LoraAdapterConfig.Parse(File.ReadAllText(configPath));
        }
        catch (InvalidDataException e)
        {
            throw Fault(e.Message, e);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw Fault($"No adapter found for {path}: adapter_config.json was removed while it was read", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Fault($"adapter_config.json cannot be read ({e.GetType().Name})", e);
        }
        CheckLegal(config, maxLoraRank, Fault);

        try
        {
            List<LoraLayerWeights> weights;
            using (var file = SafetensorsFile.Open(weightsPath)) weights = ReadWeights(file, config, model, maxLoraRank, Fault);
            return new LoraAdapter(name, path, config, weights); // hashed after the file is closed: a reload may be writing it next
        }
        catch (InvalidDataException e)
        {
            throw Fault($"malformed adapter_model.safetensors: {WithoutContent(e)}", e);
        }
        catch (RegexMatchTimeoutException e)
        {
            throw Fault($"a target_modules, exclude_modules, rank_pattern or alpha_pattern regex ran longer than {LoraAdapterConfig.RegexTimeout.TotalMilliseconds} ms", e);
        }
        catch (Exception e) when (e is FileNotFoundException or DirectoryNotFoundException)
        {
            throw Fault($"No adapter found for {path}: adapter_model.safetensors was removed while it was read", e);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw Fault($"adapter_model.safetensors cannot be read ({e.GetType().Name})", e);
        }
    }

    /// <summary>
    /// A safetensors fault without file content: a JSON syntax error by position only (the reader's message quotes
    /// the offending bytes), and anything quoted from the header shown only if it looks like a name.
    /// </summary>
    static string WithoutContent(InvalidDataException e) => e.InnerException switch
    {
        JsonException j => $"the header is not valid JSON (line {j.LineNumber + 1}, byte {j.BytePositionInLine + 1})",
        InvalidOperationException or FormatException or ArgumentException => "the header is not valid JSON",
        _ => QuotedText().Replace(e.Message, m => LoraException.Quote(m.Groups[1].Value)),
    };

    [GeneratedRegex("'([^']*)'")]
    private static partial Regex QuotedText();

    /// <summary>vLLM's validate_legal: every failure collected into one message.</summary>
    static void CheckLegal(LoraAdapterConfig c, int maxLoraRank, Func<string, Exception?, LoraException> fault)
    {
        var errors = new List<string>();
        if (c.PeftType != "LORA") errors.Add($"peft_type {LoraException.Quote(c.PeftType)} is not supported (LORA is).");
        if (c.Rank <= 0) errors.Add($"LoRA rank `r` must be a positive integer, got {c.Rank}.");
        if (!(c.Alpha > 0) || double.IsInfinity(c.Alpha)) errors.Add($"lora_alpha must be positive, got {c.Alpha}.");
        if (c.ModulesToSave is { Count: > 0 }) errors.Add("vLLM only supports modules_to_save being None.");
        if (c.UseDora) errors.Add("vLLM does not yet support DoRA.");
        if (c.Bias != "none") errors.Add("Adapter bias is not supported.");
        if (c.Rank > maxLoraRank) errors.Add($"LoRA rank {c.Rank} is greater than max_lora_rank {maxLoraRank}.");
        foreach (var (pattern, a) in c.AlphaPattern)
            if (!(a > 0) || double.IsInfinity(a)) errors.Add($"lora_alpha {a} of alpha_pattern {LoraException.Quote(pattern)} must be positive.");
        foreach (var (pattern, r) in c.RankPattern)
            if (r <= 0 || r > maxLoraRank) errors.Add($"LoRA rank {r} of rank_pattern {LoraException.Quote(pattern)} is not in 1..max_lora_rank {maxLoraRank}.");
        if (c.TargetModules is { } targets)
        {
            var unknown = targets.Where(t => !LoraModules.TryParse(t.Split('.')[^1], out _)).ToArray();
            if (unknown.Length > 0)
                errors.Add($"expected target modules in [{string.Join(", ", Enum.GetValues<LoraModule>().Select(m => m.HfName()))}] but received [{string.Join(", ", unknown.Select(LoraException.Quote))}].");
        }
        if (errors.Count > 0) throw fault(string.Join(" ", errors), null);
    }

    static List<LoraLayerWeights> ReadWeights(SafetensorsFile file, LoraAdapterConfig config, LlamaConfig model, int maxLoraRank,
        Func<string, Exception?, LoraException> fault)
    {
        var pairs = new Dictionary<(int Layer, LoraModule Module), (string? A, string? B)>();
        foreach (var tensor in file.Tensors.Keys.Order(StringComparer.Ordinal))
        {
            var m = TensorName().Match(tensor);
            if (!m.Success || !LoraModules.TryParse(m.Groups[3].Value, out var module) || module.Block() != m.Groups[2].Value)
                throw fault($"unsupported LoRA weight {LoraException.Quote(tensor)} (expected base_model.model.model.layers.N.{{self_attn|mlp}}.{{q,k,v,o,gate,up,down}}_proj.lora_{{A|B}}.weight)", null);
            if (!int.TryParse(m.Groups[1].Value, out int layer) || layer >= model.NumHiddenLayers)
                throw fault($"tensor '{tensor}' names layer {m.Groups[1].Value} but the model has {model.NumHiddenLayers} layers", null);
            if (config.WhyNotTargeted(module.ModulePath(layer), layer) is { } why)
                throw fault($"tensor '{tensor}' is for module {module.ModulePath(layer)}, which {why}", null);
            var key = (layer, module);
            pairs.TryGetValue(key, out var pair);
            pairs[key] = m.Groups[4].Value == "A" ? (tensor, pair.B) : (pair.A, tensor);
        }
        if (pairs.Count == 0) throw fault("adapter_model.safetensors holds no LoRA weights", null);

        // Check every shape before converting anything.
        var plan = new List<(int Layer, LoraModule Module, int Rank, double Scale, string A, string B)>();
        foreach (var ((layer, module), (a, b)) in pairs.OrderBy(p => p.Key.Layer).ThenBy(p => p.Key.Module))
        {
            string path = module.ModulePath(layer);
            if (a is null) throw fault($"{path}: lora_B has no matching lora_A", null);
            if (b is null) throw fault($"{path}: lora_A has no matching lora_B", null);
            var (inF, outF) = module.Features(model);
            var (rank, alpha) = config.RankAndAlpha(path);
            var ia = file.Info(a);
            var ib = file.Info(b);
            if (ia.DType is not ("F32" or "F16" or "BF16") || ib.DType is not ("F32" or "F16" or "BF16"))
                throw fault($"{path}: LoRA weights must be F32, F16 or BF16, got {ia.DType} and {ib.DType}", null);
            if (ia.Shape is not [var ar, var ai] || ai != inF)
                throw fault($"tensor '{a}' has shape [{string.Join(", ", ia.Shape)}], expected [{rank}, {inF}] for the base model", null);
            if (ib.Shape is not [var bo, var br] || bo != outF)
                throw fault($"tensor '{b}' has shape [{string.Join(", ", ib.Shape)}], expected [{outF}, {rank}] for the base model", null);
            if (ar != br) throw fault($"{path}: lora_A has rank {ar} but lora_B has rank {br}", null);
            if (ar != rank) throw fault($"{path}: weights have rank {ar} but the config says {rank}", null);
            if (rank > maxLoraRank) throw fault($"LoRA rank {rank} is greater than max_lora_rank {maxLoraRank}.", null);
            double scale = config.Scale(rank, alpha);
            // Slots hold scale·B as floats: an infinite scale makes even a zero B (a fresh PEFT adapter's) NaN.
            if (!(scale <= float.MaxValue))
                throw fault($"{path}: scale {scale} (lora_alpha {alpha}, rank {rank}, from lora_alpha or alpha_pattern) is past the float range", null);
            plan.Add((layer, module, rank, scale, a, b));
        }
        return plan.Select(p => new LoraLayerWeights(p.Layer, p.Module, p.Rank, (float)p.Scale,
            Finite(file.ReadFloats(p.A), p.A, 1, fault), Finite(file.ReadFloats(p.B), p.B, p.Scale, fault))).ToList();
    }

    /// <summary>
    /// Refuses a NaN or infinite weight, or one that overflows once scaled (B is stored as scale·B): such an adapter
    /// would turn every logit of its requests into NaN.
    /// </summary>
    static float[] Finite(float[] values, string tensor, double scale, Func<string, Exception?, LoraException> fault)
    {
        float largest = TensorPrimitives.MaxMagnitude(values); // NaN when any value is NaN
        if (float.IsFinite(largest) && Math.Abs(largest * scale) <= float.MaxValue) return values;
        int i = Array.FindIndex(values, v => !float.IsFinite(v) || Math.Abs(v * scale) > float.MaxValue);
        string what = float.IsNaN(values[i]) ? "a NaN" : float.IsInfinity(values[i]) ? "an infinity" : $"a value that overflows when scaled by {scale}";
        throw fault($"tensor '{tensor}' holds {what} at index {i}: LoRA weights must be finite", null);
    }
}
