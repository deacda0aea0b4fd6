using FsCheck.Xunit;
using LoraEngine.Core;
using Xunit;

namespace LoraEngine.Engine.Tests.Core;

public class BlockPoolTests
{
    [Property(MaxTest = 200)]
    public void Blocks_are_never_handed_out_twice_and_the_free_count_is_conserved(int seed)
    {
        var rnd = new Random(seed);
        var pool = new BlockPool(rnd.Next(1, 64), retainFreedBlocks: rnd.Next(2) == 0);
        var tables = new List<List<int>>();
        UInt128 nextHash = 1;
        for (int op = 0; op < 100; op++)
        {
            int kind = rnd.Next(5);
            if (kind < 2)
            {
                var table = new List<int>();
                int want = rnd.Next(0, 10);
                int freeBefore = pool.NumFree;
                bool ok = pool.TryAllocate(want, table);
                Assert.Equal(ok, want <= freeBefore);
                Assert.Equal(ok ? want : 0, table.Count);
                tables.Add(table);
            }
            else if (kind == 2 && tables.Count > 0)
            {
                int i = rnd.Next(tables.Count);
                pool.Free(tables[i]);
                tables.RemoveAt(i);
            }
            else if (kind == 3 && tables.SelectMany(t => t).Where(b => !pool.IsCached(b)).ToArray() is { Length: > 0 } uncached)
            {
                pool.Cache(uncached[rnd.Next(uncached.Length)], nextHash++);
            }
            else if (kind == 4 && nextHash > 1 && pool.TryGetCached((UInt128)rnd.Next(1, (int)nextHash), out int hit))
            {
                pool.Touch(hit); // a cache hit: another table shares the block
                tables.Add([hit]);
            }
            var held = tables.SelectMany(t => t).ToList();
            foreach (int block in held.Distinct()) Assert.Equal(held.Count(b => b == block), pool.RefCount(block));
            Assert.Equal(pool.NumBlocks, pool.NumFree + held.Distinct().Count());
        }
        foreach (var table in tables) pool.Free(table);
        Assert.Equal(pool.NumBlocks, pool.NumFree);
        if (!pool.RetainsFreedBlocks) Assert.Equal(0, pool.NumCached);
    }

    [Fact]
    public void Freeing_a_block_twice_is_an_error()
    {
        var pool = new BlockPool(4);
        var table = new List<int>();
        pool.TryAllocate(2, table);
        var copy = table.ToList();
        pool.Free(table);
        Assert.Throws<InvalidOperationException>(() => pool.Free(copy));
    }

    [Fact]
    public void A_free_cached_block_stays_findable_until_allocation_runs_out_of_uncached_ones()
    {
        var pool = new BlockPool(4);
        var table = new List<int>();
        pool.TryAllocate(2, table);
        int cached = table[0];
        pool.Cache(cached, 42);
        pool.Free(table);
        Assert.Equal(4, pool.NumFree);

        var other = new List<int>();
        pool.TryAllocate(3, other);
        Assert.DoesNotContain(cached, other);
        Assert.True(pool.TryGetCached(42, out int found) && found == cached);

        pool.TryAllocate(1, other); // the last free block: evicted
        Assert.Contains(cached, other);
        Assert.False(pool.TryGetCached(42, out _));
        Assert.Equal(0, pool.NumCached);
    }

    [Fact]
    public void Eviction_takes_the_least_recently_freed_first_and_a_tables_tail_before_its_head()
    {
        var pool = new BlockPool(6);
        var older = new List<int>();
        var newer = new List<int>();
        pool.TryAllocate(3, older);
        pool.TryAllocate(3, newer);
        for (int i = 0; i < 3; i++)
        {
            pool.Cache(older[i], (UInt128)(10 + i));
            pool.Cache(newer[i], (UInt128)(20 + i));
        }
        var (olderBlocks, newerBlocks) = (older.ToArray(), newer.ToArray());
        pool.Free(older);
        pool.Free(newer);

        var taken = new List<int>();
        pool.TryAllocate(4, taken);
        Assert.Equal([olderBlocks[2], olderBlocks[1], olderBlocks[0], newerBlocks[2]], taken);
        Assert.True(pool.TryGetCached(20, out _));
    }

    [Fact]
    public void A_hit_on_a_free_block_takes_it_off_the_free_list_and_the_last_holder_frees_it()
    {
        var pool = new BlockPool(3);
        var table = new List<int>();
        pool.TryAllocate(1, table);
        int block = table[0];
        pool.Cache(block, 7);
        pool.Free(table);
        Assert.Equal(3, pool.NumFree);

        var a = new List<int> { block };
        var b = new List<int> { block };
        pool.Touch(block);
        pool.Touch(block);
        Assert.Equal(2, pool.NumFree);
        Assert.Equal(2, pool.RefCount(block));
        pool.Free(a);
        Assert.Equal(2, pool.NumFree);
        pool.Free(b);
        Assert.Equal(3, pool.NumFree);
        Assert.True(pool.TryGetCached(7, out _));
    }

    [Fact]
    public void Without_retention_a_block_is_uncached_when_its_last_holder_frees_it()
    {
        var pool = new BlockPool(2, retainFreedBlocks: false);
        var table = new List<int>();
        pool.TryAllocate(1, table);
        pool.Cache(table[0], 5);
        pool.Free(table);
        Assert.False(pool.TryGetCached(5, out _));
    }
}
