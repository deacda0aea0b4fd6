namespace LoraEngine.Lora;

/// <summary>
/// The CPU tier: up to <see cref="Capacity"/> loaded adapters, least recently used evicted first,
/// so re-activating a cached adapter never touches the disk. Thread-safe.
/// </summary>
public sealed class AdapterCache(int capacity)
{
    readonly LinkedList<(int Id, LoraAdapter Adapter)> _lru = new(); // most recent first
    readonly Dictionary<int, LinkedListNode<(int Id, LoraAdapter Adapter)>> _byId = new();
    readonly object _lock = new();

    public int Capacity { get; } = capacity > 0 ? capacity : throw new ArgumentOutOfRangeException(nameof(capacity), capacity, "must be positive");

    public int Count
    {
        get { lock (_lock) return _byId.Count; }
    }

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

    public bool Remove(int id)
    {
        lock (_lock)
        {
            if (!_byId.Remove(id, out var node)) return false;
            _lru.Remove(node);
            return true;
        }
    }

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
