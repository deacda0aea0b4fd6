using System.Diagnostics;
using System.Runtime.InteropServices;

namespace LoraEngine.Core;

/// <summary>
/// Which KV blocks each sequence uses, and automatic prefix caching (vLLM's KVCacheManager). A full block is offered
/// to the cache under a key chained from its parent's (<see cref="BlockHasher"/>), with the adapter's content identity
/// (<see cref="Lora.LoraAdapter.ContentHash"/>; zero for the base model) as extra key, so a reloaded adapter with new
/// weights never finds its old blocks while two names with the same weights share theirs. A waiting sequence starts
/// after the longest run of cached blocks its tokens begin with; held blocks are shared read-only (a sequence writes
/// only blocks past its cached prefix, which it holds alone), and free cached blocks stay findable until allocation
/// evicts them. A request's cache_salt joins the extra key, so only requests with the same salt share (vLLM's
/// cache_salt: tenants who must not learn from each other's timing). Blocks are offered when scheduled, as vLLM does: a step writes the K/V of all its tokens in a layer
/// before attention reads any, so a sequence admitted later in the same step already reads them — that is how the n
/// sequences of one request compute their prompt once. A block stays offered only while its K/V is (or is being)
/// computed: a sequence released before its tokens count as computed withdraws what it offered.
/// With caching off, only the n sequences of one request share, under a key of their own.
/// </summary>
internal sealed class KvCacheManager(BlockPool pool, int blockSize, bool enablePrefixCaching)
{
    int _requests;
    long _queries;
    long _hits;

    public BlockPool Pool => pool;

    public int BlockSize => blockSize;

    /// <summary>The extra key of a request's blocks; null when no other sequence could ever read them.</summary>
    UInt128? KeyOf(Request request)
    {
        var identity = request.Adapter?.ContentHash ?? UInt128.Zero;
        if (request.CacheSalt is { } salt) identity = BlockHasher.Salted(identity, salt);
        if (enablePrefixCaching) return identity;
        return request.Sequences.Count > 1 ? BlockHasher.Hash(identity, new UInt128(1, (ulong)request.Arrival), []) : null;
    }

    /// <summary>
    /// Whether the sequence may start from cached blocks. Not the sequence that collects prompt logprobs: they need the
    /// logits of every prompt position (vLLM skips the cache for such requests too).
    /// </summary>
    static bool ReadsCache(Sequence seq) => !(seq.Index == 0 && seq.Request.PromptLogprobs != null);

    /// <summary>
    /// The cached blocks a waiting sequence's tokens begin with, longest run, leaving at least its last token to compute
    /// (its logits give the next token); empty where caching does not apply. Sets the key its blocks will be offered under.
    /// </summary>
    public IReadOnlyList<int> CachedPrefix(Sequence seq)
    {
        Debug.Assert(seq.NumComputed == 0 && seq.BlockTable.Count == 0, "only a waiting sequence starts from the cache");
        seq.CacheKey = KeyOf(seq.Request);
        seq.NumCachedBlocks = 0;
        if (seq.CacheKey is not UInt128 key || !ReadsCache(seq)) return [];
        var hits = new List<int>();
        int max = (seq.Tokens.Count - 1) / blockSize;
        for (int i = 0; i < max && pool.TryGetCached(Hash(seq, i, key), out int block); i++) hits.Add(block);
        return hits;
    }

    /// <summary>
    /// Admits a waiting sequence: holds <paramref name="cachedPrefix"/> (from <see cref="CachedPrefix"/>), counts them as
    /// computed, and reserves blocks for the next <paramref name="numNewTokens"/> tokens. False, and nothing changed, when
    /// the pool is short.
    /// </summary>
    public bool TryAdmit(Sequence seq, int numNewTokens, IReadOnlyList<int> cachedPrefix)
    {
        int revived = cachedPrefix.Count(b => pool.RefCount(b) == 0); // free cached blocks leave the free list
        int newBlocks = BlockPool.BlocksFor(cachedPrefix.Count * blockSize + numNewTokens, blockSize) - cachedPrefix.Count;
        if (newBlocks + revived > pool.NumFree) return false;
        foreach (int block in cachedPrefix)
        {
            pool.Touch(block);
            seq.BlockTable.Add(block);
        }
        seq.NumComputed = cachedPrefix.Count * blockSize;
        seq.NumCachedBlocks = cachedPrefix.Count;
        if (enablePrefixCaching && seq.CacheKey != null && ReadsCache(seq))
        {
            _requests++;
            _queries += seq.Tokens.Count;
            _hits += seq.NumComputed;
        }
        Reserve(seq, newBlocks, numNewTokens);
        return true;
    }

    /// <summary>Reserves blocks for a running sequence's next <paramref name="numNewTokens"/> tokens; false, and nothing changed, when the pool is short.</summary>
    public bool TryAllocate(Sequence seq, int numNewTokens)
    {
        int newBlocks = Math.Max(0, BlockPool.BlocksFor(seq.NumComputed + numNewTokens, blockSize) - seq.BlockTable.Count);
        if (newBlocks > pool.NumFree) return false;
        Reserve(seq, newBlocks, numNewTokens);
        return true;
    }

    void Reserve(Sequence seq, int newBlocks, int numNewTokens)
    {
        bool ok = pool.TryAllocate(newBlocks, seq.BlockTable);
        Debug.Assert(ok);
        Debug.Assert(WritesOnlyItsOwnBlocks(seq, numNewTokens), "a sequence would write a block it shares");
        Offer(seq, seq.NumComputed + numNewTokens);
    }

    /// <summary>Offers the full blocks among the sequence's first <paramref name="tokens"/> tokens to the cache.</summary>
    void Offer(Sequence seq, int tokens)
    {
        if (seq.CacheKey is not UInt128 key) return;
        if (KeyOf(seq.Request) != key)
        {
            // Its adapter was reloaded with other weights while it ran: its K/V now mixes both copies, which no key describes.
            seq.CacheKey = null;
            return;
        }
        int full = tokens / blockSize;
        for (int i = seq.NumCachedBlocks; i < full; i++)
        {
            var hash = Hash(seq, i, key);
            if (!pool.TryGetCached(hash, out _)) pool.Cache(seq.BlockTable[i], hash); // else an equal block is cached already
        }
        seq.NumCachedBlocks = Math.Max(seq.NumCachedBlocks, full);
    }

    /// <summary>
    /// Releases the sequence's blocks (finished, aborted or preempted). Blocks it offered whose tokens do not count as
    /// computed (its request failed in the update of the step that ran them) are withdrawn first: only blocks whose K/V
    /// is known to be written stay findable.
    /// </summary>
    public void Free(Sequence seq)
    {
        for (int i = seq.NumComputed / blockSize; i < seq.NumCachedBlocks; i++) pool.Uncache(seq.BlockTable[i]);
        pool.Free(seq.BlockTable);
        seq.NumCachedBlocks = 0;
    }

    /// <summary>Prefix-cache queries and hits since the last call (vLLM's PrefixCacheStats, reset as it reports).</summary>
    public PrefixCacheStats TakeStats()
    {
        var stats = new PrefixCacheStats(_requests, _queries, _hits);
        _requests = 0;
        _queries = _hits = 0;
        return stats;
    }

    UInt128 Hash(Sequence seq, int block, UInt128 key)
    {
        if (seq.BlockHashesKey != key)
        {
            seq.BlockHashes.Clear();
            seq.BlockHashesKey = key;
        }
        var tokens = CollectionsMarshal.AsSpan(seq.Tokens);
        for (int b = seq.BlockHashes.Count; b <= block; b++)
            seq.BlockHashes.Add(BlockHasher.Hash(b == 0 ? BlockHasher.Root : seq.BlockHashes[b - 1], key, tokens.Slice(b * blockSize, blockSize)));
        return seq.BlockHashes[block];
    }

    bool WritesOnlyItsOwnBlocks(Sequence seq, int numNewTokens)
    {
        for (int p = seq.NumComputed; p < seq.NumComputed + numNewTokens; p += blockSize - p % blockSize)
        {
            int block = seq.BlockTable[p / blockSize];
            if (pool.RefCount(block) != 1 || p / blockSize < seq.NumCachedBlocks) return false;
        }
        return true;
    }
}
