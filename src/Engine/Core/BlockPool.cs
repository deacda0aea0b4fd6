namespace LoraEngine.Core;

/// <summary>
/// The KV block pool (vLLM's BlockPool): a fixed number of blocks, each with a reference count (the sequences whose
/// block tables hold it) and, once it is full, possibly a prefix-cache hash under which other sequences find it.
/// Pure bookkeeping — the device memory is one preallocated cache; sequences hold block ids in their block tables.
/// A block whose count falls to 0 is free: allocation takes uncached free blocks first, then evicts cached ones least
/// recently freed first, so a cached block stays findable until the pool needs its memory.
/// </summary>
internal sealed class BlockPool
{
    readonly int[] _refCounts;
    readonly UInt128?[] _hashes;
    readonly LinkedList<int> _free = new();                  // eviction order: uncached first, then cached, oldest first
    readonly LinkedListNode<int>?[] _freeNodes;
    readonly Dictionary<UInt128, int> _cached = new();       // hash → block

    /// <param name="numBlocks">Blocks in the pool.</param>
    /// <param name="retainFreedBlocks">
    /// Keep a freed block's hash until the block is evicted (prefix caching). False: a block is uncached as soon as no
    /// sequence holds it, so hashes only let sequences running together share (the n sequences of one request).
    /// </param>
    public BlockPool(int numBlocks, bool retainFreedBlocks = true)
    {
        if (numBlocks <= 0) throw new ArgumentOutOfRangeException(nameof(numBlocks), numBlocks, "must be positive");
        NumBlocks = numBlocks;
        RetainsFreedBlocks = retainFreedBlocks;
        _refCounts = new int[numBlocks];
        _hashes = new UInt128?[numBlocks];
        _freeNodes = new LinkedListNode<int>?[numBlocks];
        for (int b = 0; b < numBlocks; b++) _freeNodes[b] = _free.AddLast(b);
    }

    public int NumBlocks { get; }

    public bool RetainsFreedBlocks { get; }

    /// <summary>Blocks no sequence holds (cached or not): what allocation can take.</summary>
    public int NumFree => _free.Count;

    /// <summary>Blocks some sequence holds.</summary>
    public int NumUsed => NumBlocks - NumFree;

    /// <summary>Blocks findable by hash (held or free).</summary>
    public int NumCached => _cached.Count;

    /// <summary>Fraction of blocks in use.</summary>
    public double Usage => (double)NumUsed / NumBlocks;

    public int RefCount(int block) => _refCounts[block];

    public bool IsCached(int block) => _hashes[block] != null;

    /// <summary>Appends <paramref name="count"/> blocks to <paramref name="table"/>; false (and nothing taken) if too few are free.</summary>
    public bool TryAllocate(int count, List<int> table)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count), count, "must not be negative");
        if (count > _free.Count) return false;
        for (int i = 0; i < count; i++)
        {
            int block = _free.First!.Value;
            RemoveFromFree(block);
            Uncache(block); // evicted
            _refCounts[block] = 1;
            table.Add(block);
        }
        return true;
    }

    /// <summary>One more sequence holds a cached block (a prefix-cache hit); a free one leaves the free list.</summary>
    public void Touch(int block)
    {
        if (_hashes[block] is null) throw new InvalidOperationException($"block {block} is not cached");
        if (_refCounts[block]++ == 0) RemoveFromFree(block);
    }

    /// <summary>
    /// Drops the table's hold on each of its blocks and clears it. Blocks nobody holds any more become free: uncached ones
    /// at the front of the eviction order, cached ones at the back, the table's last block first (it is the least likely
    /// to be shared, so it goes before the prefix it extends).
    /// </summary>
    public void Free(List<int> table)
    {
        foreach (int block in table)
            if (block < 0 || block >= NumBlocks || _refCounts[block] == 0) throw new InvalidOperationException($"block {block} is not allocated");
        for (int i = table.Count - 1; i >= 0; i--)
        {
            int block = table[i];
            if (--_refCounts[block] > 0) continue;
            if (!RetainsFreedBlocks) Uncache(block);
            _freeNodes[block] = _hashes[block] is null ? _free.AddFirst(block) : _free.AddLast(block);
        }
        table.Clear();
    }

    public bool TryGetCached(UInt128 hash, out int block) => _cached.TryGetValue(hash, out block);

    /// <summary>Makes a held, full block findable by <paramref name="hash"/> (which no other block has).</summary>
    public void Cache(int block, UInt128 hash)
    {
        if (_refCounts[block] == 0) throw new InvalidOperationException($"block {block} is free");
        if (_hashes[block] != null) throw new InvalidOperationException($"block {block} is already cached");
        if (!_cached.TryAdd(hash, block)) throw new InvalidOperationException($"another block is cached under the hash of block {block}");
        _hashes[block] = hash;
    }

    /// <summary>Forgets a block's hash, if it has one (its KV is being overwritten, or was never computed).</summary>
    public void Uncache(int block)
    {
        if (_hashes[block] is not UInt128 hash) return;
        _cached.Remove(hash);
        _hashes[block] = null;
    }

    void RemoveFromFree(int block)
    {
        _free.Remove(_freeNodes[block]!);
        _freeNodes[block] = null;
    }

    /// <summary>Blocks needed to hold <paramref name="tokens"/> tokens.</summary>
    public static int BlocksFor(int tokens, int blockSize) => (tokens + blockSize - 1) / blockSize;
}
