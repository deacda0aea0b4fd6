namespace LoraEngine.Lora;

/// <summary>
/// Which adapter sits in which GPU slot, pin counts, and least-recently-used order: pure bookkeeping,
/// no device. A slot is pinned while any running request uses it and is never evicted then.
/// </summary>
public sealed class SlotTable(int slots)
{
    readonly int[] _adapter = Enumerable.Repeat(-1, slots).ToArray(); // adapter id per slot, -1 = free
    readonly int[] _pins = new int[slots];
    readonly long[] _lastUse = new long[slots];
    long _clock;

    public int Slots { get; } = slots;

    /// <summary>The slot holding <paramref name="adapterId"/>, or -1.</summary>
    public int SlotOf(int adapterId) => Array.IndexOf(_adapter, adapterId);

    public int AdapterIn(int slot) => _adapter[slot];

    public int PinCount(int slot) => _pins[slot];

    public int TotalPins => _pins.Sum();

    public IEnumerable<int> ActiveAdapters => _adapter.Where(a => a >= 0);

    /// <summary>
    /// Finds a slot for <paramref name="adapterId"/>: the one it is in, else a free one, else the least recently
    /// used unpinned one. Returns (slot, evictedAdapterId or -1, needsCopy); slot -1 when every slot is pinned.
    /// </summary>
    public (int Slot, int Evicted, bool NeedsCopy) Acquire(int adapterId)
    {
        int slot = SlotOf(adapterId);
        if (slot >= 0)
        {
            _lastUse[slot] = ++_clock;
            return (slot, -1, false);
        }
        slot = Array.IndexOf(_adapter, -1);
        int evicted = -1;
        if (slot < 0)
        {
            long oldest = long.MaxValue;
            for (int s = 0; s < Slots; s++)
                if (_pins[s] == 0 && _lastUse[s] < oldest)
                {
                    oldest = _lastUse[s];
                    slot = s;
                }
            if (slot < 0) return (-1, -1, false);
            evicted = _adapter[slot];
        }
        _adapter[slot] = adapterId;
        _lastUse[slot] = ++_clock;
        return (slot, evicted, true);
    }

    public void Pin(int slot) => _pins[slot]++;

    public void Unpin(int slot)
    {
        if (_pins[slot] <= 0) throw new InvalidOperationException($"slot {slot} is not pinned");
        _pins[slot]--;
    }

    /// <summary>Frees the slot of an adapter (when it is removed); false if it is pinned or absent.</summary>
    public bool Release(int adapterId)
    {
        int slot = SlotOf(adapterId);
        if (slot < 0 || _pins[slot] > 0) return false;
        _adapter[slot] = -1;
        return true;
    }
}
