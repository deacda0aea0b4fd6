using LoraEngine.Models;

namespace LoraEngine.Lora;

/// <summary>
/// Owns the adapters of an engine: the CPU LRU cache of loaded adapters and the GPU slots they are
/// activated into (vLLM's LRUCacheLoRAModelManager). Loading from disk happens outside the lock, so a slow
/// load never blocks the step loop; activation copies host weights into a slot.
/// </summary>
public sealed class LoraManager
{
    readonly LoraLayers _layers;
    readonly AdapterCache _cache;
    readonly SlotTable _slots;
    readonly LlamaConfig _config;
    readonly object _lock = new();

    public LoraManager(LoraLayers layers, LlamaConfig config, int maxCpuLoras)
    {
        _layers = layers;
        _config = config;
        _cache = new AdapterCache(maxCpuLoras);
        _slots = new SlotTable(layers.MaxSlots);
    }

    public int MaxSlots => _layers.MaxSlots;

    public int MaxRank => _layers.MaxRank;

    /// <summary>Adapter ids loaded in the CPU cache.</summary>
    public IReadOnlyCollection<int> Loaded => _cache.Ids;

    /// <summary>Adapter ids currently in GPU slots.</summary>
    public IReadOnlyCollection<int> Active
    {
        get { lock (_lock) return _slots.ActiveAdapters.ToArray(); }
    }

    /// <summary>Total pins over all slots (0 when no running request uses an adapter).</summary>
    public int TotalPins
    {
        get { lock (_lock) return _slots.TotalPins; }
    }

    public bool IsLoaded(int id) => _cache.Contains(id);

    /// <summary>
    /// Reads and validates an adapter from disk into the CPU cache (nothing is allocated on the device).
    /// Throws <see cref="LoraException"/> naming the adapter and the fault; nothing of a refused adapter stays.
    /// </summary>
    public LoraAdapter Load(string name, int id, string path)
    {
        if (_cache.TryGet(id, out var cached)) return cached;
        var adapter = LoraAdapter.Load(name, path, _config, MaxRank);
        _cache.Add(id, adapter);
        return adapter;
    }

    /// <summary>Removes an adapter from the CPU cache and frees its GPU slot if no request uses it.</summary>
    public bool Remove(int id)
    {
        bool removed = _cache.Remove(id);
        lock (_lock)
        {
            int slot = _slots.SlotOf(id);
            if (slot >= 0 && _slots.Release(id))
            {
                _layers.ResetSlot(slot);
                removed = true;
            }
        }
        return removed;
    }

    /// <summary>
    /// Puts adapter <paramref name="id"/> into a GPU slot and pins it for one request; returns the slot,
    /// or -1 when every slot is pinned by other adapters (the request must wait).
    /// </summary>
    public int ActivateAndPin(int id)
    {
        if (!_cache.TryGet(id, out var adapter))
            throw new InvalidOperationException($"LoRA adapter {id} is not loaded");
        lock (_lock)
        {
            var (slot, _, needsCopy) = _slots.Acquire(id);
            if (slot < 0) return -1;
            if (needsCopy) _layers.SetSlot(slot, adapter);
            _slots.Pin(slot);
            return slot;
        }
    }

    /// <summary>Releases one request's pin on the slot of adapter <paramref name="id"/>.</summary>
    public void Unpin(int id)
    {
        lock (_lock)
        {
            int slot = _slots.SlotOf(id);
            if (slot < 0) throw new InvalidOperationException($"LoRA adapter {id} is not in a slot");
            _slots.Unpin(slot);
        }
    }

    /// <summary>The slot of an active adapter, or -1.</summary>
    public int SlotOf(int id)
    {
        lock (_lock) return _slots.SlotOf(id);
    }
}
