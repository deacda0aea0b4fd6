namespace LoraEngine.Core;

/// <summary>
/// The KV block pool: a fixed number of blocks handed out from a free list. Pure bookkeeping — the device
/// memory is one preallocated cache; sequences hold block ids in their block tables.
/// </summary>
internal sealed class BlockAllocator
{
    readonly Stack<int> _free;
    readonly bool[] _inUse;

    public BlockAllocator(int numBlocks)
    {
        if (numBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "must be positive");
        NumBlocks = numBlocks;
        _inUse = new bool[numBlocks];
        _free = new Stack<int>(Enumerable.Range(0, numBlocks).Reverse());
    }

    public int NumBlocks { get; }

    public int NumFree => _free.Count;

    public int NumUsed => NumBlocks - NumFree;

    /// <summary>Fraction of blocks in use.</summary>
    public double Usage => (double)NumUsed / NumBlocks;

    /// <summary>Appends <paramref name="count"/> blocks to <paramref name="table"/>; false (and nothing taken) if too few are free.</summary>
    public bool TryAllocate(int count, List<int> table)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "must not be negative");
        if (count > _free.Count) return false;
        for (int i = 0; i < count; i++)
        {
            int block = _free.Pop();
            _inUse[block] = true;
            table.Add(block);
        }
        return true;
    }

    /// <summary>Returns every block of <paramref name="table"/> to the pool and clears it.</summary>
    public void Free(List<int> table)
    {
        foreach (int block in table)
        {
            if (block < 0 || block >= NumBlocks || !_inUse[block]) throw new InvalidOperationException($"block {block} is not allocated");
            _inUse[block] = false;
            _free.Push(block);
        }
        table.Clear();
    }

    /// <summary>Blocks needed to hold <paramref name="tokens"/> tokens.</summary>
    public static int BlocksFor(int tokens, int blockSize) => (tokens + blockSize - 1) / blockSize;
}
