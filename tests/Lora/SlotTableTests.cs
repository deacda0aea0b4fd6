using FsCheck.Xunit;
using LoraEngine.Lora;
using Xunit;

namespace LoraEngine.Lora.Tests;

public class SlotTableTests
{
    [Fact]
    public void Acquire_uses_free_slots_then_evicts_the_least_recently_used_unpinned()
    {
        var table = new SlotTable(2);
        Assert.Equal((0, -1, true), table.Acquire(10));
        Assert.Equal((1, -1, true), table.Acquire(20));
        Assert.Equal((0, -1, false), table.Acquire(10)); // already active: no copy, now most recent
        Assert.Equal((1, 20, true), table.Acquire(30));  // 20 was least recently used
        table.Pin(0);
        table.Pin(1);
        Assert.Equal(-1, table.Acquire(40).Slot);        // every slot pinned: the request waits
        table.Unpin(0);
        Assert.Equal((0, 10, true), table.Acquire(40));
    }

    [Fact]
    public void Pinned_adapters_are_never_released()
    {
        var table = new SlotTable(1);
        table.Acquire(5);
        table.Pin(0);
        Assert.False(table.Release(5));
        table.Unpin(0);
        Assert.True(table.Release(5));
        Assert.Equal(-1, table.SlotOf(5));
        Assert.Throws<InvalidOperationException>(() => table.Unpin(0));
    }

    [Property(MaxTest = 200)]
    public void An_adapter_is_in_at_most_one_slot_and_pinned_slots_keep_their_adapter(int seed)
    {
        var rnd = new Random(seed);
        int slots = rnd.Next(1, 5);
        var table = new SlotTable(slots);
        var pinnedAdapter = new Dictionary<int, int>();
        for (int step = 0; step < 60; step++)
        {
            int adapter = rnd.Next(1, 8);
            var (slot, _, _) = table.Acquire(adapter);
            if (slot >= 0 && rnd.Next(3) == 0)
            {
                table.Pin(slot);
                pinnedAdapter[slot] = adapter;
            }
            if (rnd.Next(4) == 0 && pinnedAdapter.Count > 0)
            {
                int s = pinnedAdapter.Keys.First();
                table.Unpin(s);
                if (table.PinCount(s) == 0) pinnedAdapter.Remove(s);
            }
            var active = table.ActiveAdapters.ToList();
            Assert.Equal(active.Count, active.Distinct().Count());
            foreach (var (s, a) in pinnedAdapter) Assert.Equal(a, table.AdapterIn(s));
        }
    }
}
