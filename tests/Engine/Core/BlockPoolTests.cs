using FsCheck.Xunit;
using LoraEngine.Core;
using Xunit;

namespace LoraEngine.Engine.Tests.Core;

public class BlockAllocatorTests
{
    [Property(MaxTest = 200)]
    public void Blocks_are_never_handed_out_twice_and_the_free_count_is_conserved(int seed)
    {
        var rnd = new Random(seed);
        var allocator = new BlockAllocator(rnd.Next(1, 64));
        var tables = new List<List<int>>();
        for (int op = 0; op < 100; op++)
        {
            if (rnd.Next(3) > 0)
            {
                var table = new List<int>();
                int want = rnd.Next(0, 10);
                int freeBefore = allocator.NumFree;
                bool ok = allocator.TryAllocate(want, table);
                Assert.Equal(ok, want <= freeBefore);
                Assert.Equal(ok ? want : 0, table.Count);
                tables.Add(table);
            }
            else if (tables.Count > 0)
            {
                int i = rnd.Next(tables.Count);
                allocator.Free(tables[i]);
                tables.RemoveAt(i);
            }
            var held = tables.SelectMany(t => t).ToList();
            Assert.Equal(held.Count, held.Distinct().Count());
            Assert.Equal(allocator.NumBlocks, allocator.NumFree + held.Count);
        }
    }

    [Fact]
    public void Freeing_a_block_twice_is_an_error()
    {
        var allocator = new BlockAllocator(4);
        var table = new List<int>();
        allocator.TryAllocate(2, table);
        var copy = table.ToList();
        allocator.Free(table);
        Assert.Throws<InvalidOperationException>(() => allocator.Free(copy));
    }
}
