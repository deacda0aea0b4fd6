namespace LoraEngine.Lora;

/// <summary>
/// Which copy of an adapter sits in which GPU slot, in least-recently-used order: pure bookkeeping, no device.
/// A copy is named by a key (<see cref="LoraAdapter"/>'s load serial), so a reloaded adapter is a different key and
/// never mistaken for the weights already in a slot. A step's adapters are placed together by <see cref="Assign"/>:
/// the ones already resident keep their slots, the others take free slots, then the least recently used slots that
/// hold nothing this step needs. No pins (as in vLLM): a slot is in use only for the step it was assigned in.
/// </summary>
internal sealed class SlotTable
{
    /// <summary>The key of an empty slot.</summary>
    public const long Empty = -1;

    readonly long[] _key;
    readonly long[] _lastUse;
    long _clock;

    /// <summary>A table of <paramref name="slots"/> empty slots (positive).</summary>
    public SlotTable(int slots)
    {
        if (slots <= 0) throw new ArgumentOutOfRangeException(nameof(slots), slots, "must be positive");
        Slots = slots;
        _key = Enumerable.Repeat(Empty, slots).ToArray();
        _lastUse = new long[slots];
    }

    /// <summary>Number of GPU slots.</summary>
    public int Slots { get; }

    /// <summary>The slot holding <paramref name="key"/>, or -1.</summary>
    public int SlotOf(long key) => Array.IndexOf(_key, key);

    /// <summary>The key held by <paramref name="slot"/>, or <see cref="Empty"/>.</summary>
    public long KeyIn(int slot) => _key[slot];

    /// <summary>The keys held by non-empty slots.</summary>
    public IEnumerable<long> ResidentKeys => _key.Where(k => k != Empty);

    /// <summary>
    /// Places one step's distinct keys (at most <see cref="Slots"/>) and returns, per key in order, its slot and whether
    /// the slot must be filled with that key's weights (false only when the slot already holds exactly that key).
    /// </summary>
    public (int Slot, bool NeedsCopy)[] Assign(IReadOnlyList<long> keys)
    {
        if (keys.Count > Slots) throw new ArgumentException($"{keys.Count} adapters in one step but only {Slots} slots", nameof(keys));
        if (keys.Distinct().Count() != keys.Count) throw new ArgumentException("the keys of a step must be distinct", nameof(keys));
        long now = ++_clock;
        var placed = new (int Slot, bool NeedsCopy)[keys.Count];
        var taken = new bool[Slots];
        for (int i = 0; i < keys.Count; i++)
        {
            int slot = SlotOf(keys[i]);
            placed[i] = (slot, slot < 0);
            if (slot >= 0) Use(slot, now, taken);
        }
        for (int i = 0; i < keys.Count; i++)
        {
            if (placed[i].Slot >= 0) continue;
            int slot = Victim(taken);
            _key[slot] = keys[i];
            Use(slot, now, taken);
            placed[i] = (slot, true);
        }
        return placed;
    }

    /// <summary>Forgets what a slot holds (its fill failed, or its weights must not be reused).</summary>
    public void Release(int slot) => _key[slot] = Empty;

    void Use(int slot, long now, bool[] taken)
    {
        _lastUse[slot] = now;
        taken[slot] = true;
    }

    /// <summary>An empty slot not taken this step, else the least recently used one not taken.</summary>
    int Victim(bool[] taken)
    {
        int best = -1;
        for (int s = 0; s < Slots; s++)
        {
            if (taken[s]) continue;
            if (_key[s] == Empty) return s;
            if (best < 0 || _lastUse[s] < _lastUse[best]) best = s;
        }
        return best;
    }
}
