namespace LoraEngine.Lora;

/// <summary>
/// The CPU tier: up to <see cref="Capacity"/> loaded adapters, least recently used evicted first,
/// so re-activating a cached adapter never touches the disk. Thread-safe.
/// </summary>
internal sealed class AdapterCache(int capacity)
{
    readonly LinkedList<(int Id, LoraAdapter Adapter)> _lru = new(); // most recent first
    readonly Dictionary<int, LinkedListNode<(int Id, LoraAdapter Adapter)>> _byId = new();
    readonly object _lock = new();

    /// <summary>Adapters kept at most (vLLM's max_cpu_loras); positive.</summary>
    public int Capacity { get; } = capacity > 0 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "must be positive");

    /// <summary>Adapters cached now.</summary>
    public int Count
    {
        get { lock (_lock) return _byId.Count; }
    }

    /// <summary>The adapter cached under <paramref name="id"/>, marked most recently used; false when there is none.</summary>
    public bool TryGet(int id, out LoraAdapter adapter)
    {
        lock (_lock)
        {
            if (_byId.TryGetValue(id, out var node))
            {
                _lru.Remove(node);
                _lru.AddFirst(node);
                adapter = node.Value.Adapter;
                return true;
            }
            adapter = null!;
            return false;
        }
    }

    /// <summary>Whether <paramref name="id"/> is cached; does not count as a use.</summary>
    public bool Contains(int id)
    {
        lock (_lock) return _byId.ContainsKey(id);
    }

    /// <summary>Adds (or replaces) an adapter; returns the ids evicted to make room.</summary>
    public IReadOnlyList<int> Add(int id, LoraAdapter adapter)
    {
        lock (_lock)
        {
            if (_byId.Remove(id, out var old)) _lru.Remove(old);
            _byId[id] = _lru.AddFirst((id, adapter));
            var evicted = new List<int>();
            while (_byId.Count > Capacity)
            {
                var last = _lru.Last!;
                _lru.RemoveLast();
                _byId.Remove(last.Value.Id);
                evicted.Add(last.Value.Id);
            }
            return evicted;
        }
    }

    /// <summary>Drops <paramref name="id"/> from the cache; false when it was not there.</summary>
    public bool Remove(int id)
    {
        lock (_lock)
        {
            if (!_byId.Remove(id, out var node)) return false;
            _lru.Remove(node);
            return true;
        }
    }

    /// <summary>A snapshot of the cached ids.</summary>
    public IReadOnlyCollection<int> Ids
    {
        get { lock (_lock) return _byId.Keys.ToArray(); }
    }

    /// <summary>The cached adapters, most recently used first.</summary>
    public IReadOnlyList<(int Id, LoraAdapter Adapter)> Entries
    {
        get { lock (_lock) return _lru.ToArray(); }
    }
}
