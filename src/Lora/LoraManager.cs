using System.Collections.Concurrent;
using System.Numerics.Tensors;
using LoraEngine.Models;
using LoraEngine.Tensors;

namespace LoraEngine.Lora;

/// <summary>
/// Owns the adapters of an engine (vLLM's LRUCacheLoRAModelManager): the CPU cache of validated host copies, and the
/// GPU slots the model runner activates a step's adapters into. Reading from disk happens only in <see cref="Load(string, int, string, string?, bool)"/>,
/// called when a request or a load arrives, never inside a step; <see cref="ActivateForStep"/> copies host weights
/// that were validated at load time into slots, evicting slots no adapter of the step needs.
///
/// Under tensor parallelism every rank has slot buffers of its own (its share of each adapter), and one manager fills
/// them all: every rank runs the same steps, so where vLLM's per-worker managers each make the same slot decisions,
/// this one makes them once, and one CPU cache holds the whole validated adapters each rank slices its share from.
/// </summary>
public sealed class LoraManager
{
    readonly IReadOnlyList<LoraLayers> _ranks;
    readonly AdapterCache _cache;
    readonly SlotTable _slots;
    readonly LlamaConfig _config;
    readonly object _slotLock = new();
    readonly ConcurrentDictionary<int, object> _loadLocks = new(); // one read of an adapter id at a time

    /// <summary>A manager over the model's LoRA layers with an empty CPU cache and empty slots.</summary>
    /// <param name="layers">the model's wrapped projections; their slot count and rank bound the adapters</param>
    /// <param name="config">the base model, which every adapter is checked against</param>
    /// <param name="maxCpuLoras">adapters the CPU cache keeps (vLLM's max_cpu_loras), least recently used evicted first</param>
    public LoraManager(LoraLayers layers, LlamaConfig config, int maxCpuLoras)
        : this([layers], config, maxCpuLoras)
    {
    }

    /// <summary>A manager over the LoRA layers of every tensor-parallel rank (rank order), with one CPU cache and one slot table.</summary>
    /// <param name="ranks">each rank's wrapped projections; all with the same slot count and rank</param>
    /// <param name="config">the base model (config.json, not a rank's share), which every adapter is checked against</param>
    /// <param name="maxCpuLoras">adapters the CPU cache keeps (vLLM's max_cpu_loras), least recently used evicted first</param>
    public LoraManager(IReadOnlyList<LoraLayers> ranks, LlamaConfig config, int maxCpuLoras)
    {
        ArgumentNullException.ThrowIfNull(ranks);
        if (ranks.Count == 0) throw new ArgumentException("at least one rank's LoRA layers are needed", nameof(ranks));
        if (ranks.Any(r => r.MaxSlots != ranks[0].MaxSlots || r.MaxRank != ranks[0].MaxRank))
            throw new ArgumentException("every rank's LoRA layers must have the same slots and max rank", nameof(ranks));
        _ranks = ranks;
        _config = config;
        _cache = new AdapterCache(maxCpuLoras);
        _slots = new SlotTable(ranks[0].MaxSlots);
    }

    /// <summary>GPU slots: the most adapters one step can use.</summary>
    public int MaxSlots => _ranks[0].MaxSlots;

    /// <summary>The largest adapter rank accepted (vLLM's max_lora_rank).</summary>
    public int MaxRank => _ranks[0].MaxRank;

    /// <summary>Adapter ids loaded in the CPU cache.</summary>
    public IReadOnlyCollection<int> Loaded => _cache.Ids;

    /// <summary>Ids of cached adapters whose current copy sits in a GPU slot (a slot keeps its copy until a step needs the slot).</summary>
    public IReadOnlyCollection<int> Active
    {
        get
        {
            HashSet<long> resident;
            lock (_slotLock) resident = _slots.ResidentKeys.ToHashSet();
            return _cache.Entries.Where(e => resident.Contains(e.Adapter.Serial)).Select(e => e.Id).ToArray();
        }
    }

    /// <summary>Whether adapter <paramref name="id"/> is in the CPU cache.</summary>
    public bool IsLoaded(int id) => _cache.Contains(id);

    /// <summary>The cached copy of an adapter, or <see cref="Load(string, int, string, string?, bool)"/>'s read.</summary>
    public LoraAdapter Load(string name, int id, string path) => Load(name, id, path, loraRoot: null, replace: false);

    /// <summary>
    /// The validated host copy of adapter <paramref name="id"/>: the cached one, else read from disk now (one read per
    /// id at a time, so callers asking together share it). <paramref name="replace"/> reads again even when cached and
    /// replaces the cached copy (load_inplace): requests holding the old copy keep it, later ones get the new one.
    /// <paramref name="loraRoot"/> confines the read (see <see cref="LoraAdapter.Load(string, string, LlamaConfig, int, string?)"/>).
    /// Throws <see cref="LoraException"/>; nothing of a refused adapter stays, and a refused reload leaves the cache as it was.
    /// </summary>
    public LoraAdapter Load(string name, int id, string path, string? loraRoot, bool replace)
    {
        if (!replace && _cache.TryGet(id, out var cached)) return cached;
        lock (_loadLocks.GetOrAdd(id, _ => new object()))
        {
            if (!replace && _cache.TryGet(id, out cached)) return cached; // read by the caller we waited for
            var adapter = LoraAdapter.Load(name, path, _config, MaxRank, loraRoot);
            CheckFitsSlots(adapter);
            _cache.Add(id, adapter);
            return adapter;
        }
    }

    /// <summary>
    /// F16 slots hold A and scale·B to ±65504: a larger value would become an infinity in the slot and every token of the
    /// adapter a NaN, so such an adapter is refused when it is read (F32 and BF16 slots hold every finite float).
    /// </summary>
    void CheckFitsSlots(LoraAdapter adapter)
    {
        if (_ranks[0].DType != DType.F16) return;
        const float F16Max = 65504f;
        foreach (var w in adapter.Weights)
        {
            float a = Math.Abs(TensorPrimitives.MaxMagnitude<float>(w.A)), b = Math.Abs(w.Scale * TensorPrimitives.MaxMagnitude<float>(w.B));
            if (a > F16Max || b > F16Max)
                throw new LoraException(adapter.Name, adapter.Path,
                    $"{w.Module.HfName()} of layer {w.Layer} holds {(a > F16Max ? $"a lora_A value of magnitude {a}" : $"a scaled lora_B value of magnitude {b}")}, past the ±{F16Max} the float16 LoRA slots hold (lora_dtype)");
        }
    }

    /// <summary>Removes an adapter from the CPU cache. Requests already holding it keep their copy; its GPU slot is reused later.</summary>
    public bool Remove(int id) => _cache.Remove(id);

    /// <summary>
    /// The model runner's one call per step: places the step's distinct adapters (at most <see cref="MaxSlots"/>, which the
    /// scheduler guarantees) into GPU slots and returns each one's slot. An adapter whose exact copy is resident keeps its
    /// slot; the others are copied into free slots, then into the least recently used slots this step does not need.
    /// </summary>
    public IReadOnlyDictionary<LoraAdapter, int> ActivateForStep(IReadOnlyCollection<LoraAdapter> adapters)
    {
        var step = adapters.Distinct().ToArray();
        if (step.Length > MaxSlots)
            throw new ArgumentException($"{step.Length} adapters in one step, more than the {MaxSlots} GPU slots", nameof(adapters));
        var slots = new Dictionary<LoraAdapter, int>(step.Length);
        lock (_slotLock)
        {
            var placed = _slots.Assign(step.Select(a => a.Serial).ToArray());
            for (int i = 0; i < step.Length; i++)
            {
                var (slot, needsCopy) = placed[i];
                if (needsCopy) Fill(slot, step[i]);
                slots[step[i]] = slot;
            }
        }
        return slots;
    }

    void Fill(int slot, LoraAdapter adapter)
    {
        try
        {
            foreach (var rank in _ranks) rank.SetSlot(slot, adapter);
        }
        catch
        {
            _slots.Release(slot); // half-copied: never reuse it as this adapter
            throw;
        }
    }
}
