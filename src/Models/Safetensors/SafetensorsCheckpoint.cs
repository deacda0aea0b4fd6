using System.Text.Json;

namespace LoraEngine.Models.Safetensors;

/// <summary>
/// A model folder's weights: <c>model.safetensors</c>, or shards listed by <c>model.safetensors.index.json</c>
/// (each shard opened once, and every weight_map entry checked against its shard).
/// </summary>
public sealed class SafetensorsCheckpoint : IDisposable
{
    readonly Dictionary<string, SafetensorsFile> _fileOf = new(StringComparer.Ordinal);
    readonly List<SafetensorsFile> _files = new();

    SafetensorsCheckpoint() { }

    /// <summary>Every tensor name in the checkpoint, over all shards.</summary>
    public IEnumerable<string> Names => _fileOf.Keys;

    /// <summary>Opens a model folder's <c>model.safetensors</c>, else the shards its <c>model.safetensors.index.json</c> lists.</summary>
    /// <exception cref="FileNotFoundException">The folder has neither file.</exception>
    /// <exception cref="InvalidDataException">A malformed index or file, a shard outside the folder, or a tensor mapped to a shard that lacks it; the message names the file and tensor.</exception>
    public static SafetensorsCheckpoint Open(string modelDir)
    {
        var checkpoint = new SafetensorsCheckpoint();
        try
        {
            string single = Path.Combine(modelDir, "model.safetensors");
            string index = Path.Combine(modelDir, "model.safetensors.index.json");
            if (File.Exists(single))
            {
                var file = SafetensorsFile.Open(single);
                checkpoint._files.Add(file);
                foreach (var name in file.Tensors.Keys) checkpoint._fileOf[name] = file;
            }
            else if (File.Exists(index))
            {
                checkpoint.OpenShards(modelDir, index);
            }
            else
            {
                throw new FileNotFoundException($"{modelDir}: neither model.safetensors nor model.safetensors.index.json exists (only safetensors checkpoints are supported)");
            }
            return checkpoint;
        }
        catch
        {
            checkpoint.Dispose();
            throw;
        }
    }

    void OpenShards(string modelDir, string index)
    {
        JsonElement weightMap;
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (!doc.RootElement.TryGetProperty("weight_map", out var wm) || wm.ValueKind != JsonValueKind.Object)
                throw new InvalidDataException($"{index}: no weight_map object");
            weightMap = wm.Clone();
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{index}: not valid JSON ({e.Message})", e);
        }
        string root = Path.GetFullPath(modelDir);
        var shards = new Dictionary<string, SafetensorsFile>(StringComparer.Ordinal);
        foreach (var entry in weightMap.EnumerateObject())
        {
            if (entry.Value.ValueKind != JsonValueKind.String) throw new InvalidDataException($"{index}: weight_map entry '{entry.Name}' is not a file name");
            string shard = entry.Value.GetString()!;
            string full = Path.GetFullPath(Path.Combine(modelDir, shard));
            if (!full.StartsWith(root + Path.DirectorySeparatorChar, StringComparison.Ordinal))
                throw new InvalidDataException($"{index}: shard '{shard}' of tensor '{entry.Name}' lies outside the model folder");
            if (!shards.TryGetValue(shard, out var file))
            {
                file = SafetensorsFile.Open(full);
                shards[shard] = file;
                _files.Add(file);
            }
            if (!file.Contains(entry.Name)) throw new InvalidDataException($"{index}: tensor '{entry.Name}' is mapped to {shard}, which does not hold it");
            _fileOf[entry.Name] = file;
        }
    }

    /// <summary>Whether the checkpoint holds a tensor named <paramref name="name"/>.</summary>
    public bool Contains(string name) => _fileOf.ContainsKey(name);

    /// <summary>The tensor's header entry; KeyNotFoundException when there is no such tensor.</summary>
    public TensorInfo Info(string name) => FileOf(name).Info(name);

    /// <summary>The tensor's raw bytes, straight from its shard's map (valid while the checkpoint is open); KeyNotFoundException when there is no such tensor.</summary>
    public ReadOnlySpan<byte> GetBytes(string name) => FileOf(name).GetBytes(name);

    /// <summary>An F32, F16 or BF16 tensor as a new F32 array; KeyNotFoundException when there is no such tensor.</summary>
    public float[] ReadFloats(string name) => FileOf(name).ReadFloats(name);

    /// <summary>"file: tensor" for messages.</summary>
    public string Describe(string name) => _fileOf.TryGetValue(name, out var f) ? f.Path : (_files.Count == 1 ? _files[0].Path : "checkpoint");

    SafetensorsFile FileOf(string name) =>
        _fileOf.TryGetValue(name, out var file) ? file : throw new KeyNotFoundException($"the checkpoint has no tensor named '{name}'");

    /// <summary>Unmaps every shard; spans from <see cref="GetBytes"/> are invalid afterwards.</summary>
    public void Dispose()
    {
        foreach (var f in _files) f.Dispose();
    }
}
