using FsCheck.Xunit;
using LoraEngine.Lora;
using Xunit;

namespace LoraEngine.Lora.Tests;

public class SlotTableTests
{
    [Fact]
    public void A_step_keeps_resident_keys_fills_free_slots_then_evicts_the_least_recently_used_unneeded()
    {
        var table = new SlotTable(2);
        Assert.Equal([(0, true)], table.Assign([10]));
        Assert.Equal([(0, false), (1, true)], table.Assign([10, 20])); // 10 is resident: no copy
        Assert.Equal([(0, false)], table.Assign([10]));                  // 10 now more recent than 20
        Assert.Equal([(1, true)], table.Assign([30]));                   // evicts 20, the least recently used
        Assert.Equal([(1, false), (0, true)], table.Assign([30, 40]));   // 10 is older, but 30 is needed: 10 goes
        Assert.Equal(-1, table.SlotOf(10));
    }

    [Fact]
    public void A_reloaded_adapter_is_a_new_key_and_is_copied_even_where_its_old_copy_sits()
    {
        var table = new SlotTable(2);
        table.Assign([1]);
        var placed = table.Assign([2]); // the same adapter read again: a new serial
        Assert.True(placed[0].NeedsCopy);
        Assert.Equal(1, table.KeyIn(0));
        Assert.Equal([(1, false), (0, true)], table.Assign([2, 3])); // the stale copy's slot is the one reused
    }

    [Fact]
    public void More_keys_than_slots_or_repeated_keys_are_refused_and_a_released_slot_is_empty()
    {
        var table = new SlotTable(2);
        Assert.Throws<ArgumentException>(() => table.Assign([1, 2, 3]));
        Assert.Throws<ArgumentException>(() => table.Assign([1, 1]));
        table.Assign([5]);
        table.Release(table.SlotOf(5));
        Assert.Equal(-1, table.SlotOf(5));
        Assert.Empty(table.ResidentKeys);
    }

    [Property(MaxTest = 200)]
    public void Every_step_gets_distinct_slots_holding_exactly_its_keys_and_copies_only_what_was_not_resident(int seed)
    {
        var rnd = new Random(seed);
        int slots = rnd.Next(1, 5);
        var table = new SlotTable(slots);
        var holds = new long[slots];
        Array.Fill(holds, SlotTable.Empty);
        for (int step = 0; step < 60; step++)
        {
            var keys = Enumerable.Range(0, rnd.Next(0, slots + 1)).Select(_ => (long)rnd.Next(1, 9)).Distinct().ToArray();
            var placed = table.Assign(keys);
            Assert.Equal(keys.Length, placed.Select(p => p.Slot).Distinct().Count());
            for (int i = 0; i < keys.Length; i++)
            {
                Assert.Equal(holds[placed[i].Slot] != keys[i], placed[i].NeedsCopy);
                holds[placed[i].Slot] = keys[i];
                Assert.Equal(keys[i], table.KeyIn(placed[i].Slot));
            }
            var resident = table.ResidentKeys.ToList();
            Assert.Equal(resident.Count, resident.Distinct().Count());
        }
    }
}
