using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;
using Case = LoraEngine.Tensors.Tests.Kernels.AttentionKernelsTests.Case;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// The split-context attention kernels (head_dim 32, 64, 128, 256) against the contiguous reference at contexts on
/// both sides of the split boundaries (64 positions a split up to 1024, then longer splits), GQA ratios up to more
/// heads than one group serves, prefill chunks, unmapped blocks; and a token's result bit for bit the same alone,
/// beside other tokens, and however many tokens a launch takes.
/// </summary>
public class SplitAttentionTests
{
    /// <summary>Every sequence queried by its last <paramref name="chunks"/>[s] positions (1: a decode token), blocks scattered.</summary>
    static Case NewCase(int seed, int heads, int kvHeads, int headDim, int blockSize, int[] lengths, int[] chunks)
    {
        var rnd = new RandomData(seed);
        int kvWidth = kvHeads * headDim, seqs = lengths.Length;
        int maxBlocks = lengths.Max() / blockSize + 1, numBlocks = seqs * maxBlocks + 2;
        var perm = Enumerable.Range(0, numBlocks).OrderBy(_ => rnd.Random.Next()).ToArray();
        var tables = perm.Take(seqs * maxBlocks).ToArray();
        var seqOf = new List<int>();
        var posOf = new List<int>();
        for (int s = 0; s < seqs; s++)
            for (int p = lengths[s] - chunks[s]; p < lengths[s]; p++)
            {
                seqOf.Add(s);
                posOf.Add(p);
            }
        // Keys scaled up so softmaxes are peaked and long contexts are not a near-uniform average.
        return new Case(heads, kvHeads, headDim, blockSize, numBlocks, maxBlocks,
            lengths.Select(l => rnd.Floats(l * kvWidth, 3f)).ToArray(), lengths.Select(l => rnd.Floats(l * kvWidth)).ToArray(),
            tables, seqOf.ToArray(), posOf.ToArray(), rnd.Floats(seqOf.Count * heads * headDim, 3f));
    }

    static float[] Reference(Case c) =>
        AttentionReference.Attend(c.Q, c.Keys, c.Values, c.TokenSeq, c.TokenPos, c.Heads, c.KvHeads, c.HeadDim, 1 / Math.Sqrt(c.HeadDim));

    static ComputeDevice Device => TestDevices.Configured;

    // (ILGPU's CPU accelerator runs a group of 128 threads as OS threads: the cases are kept to a few dozen groups.)
    static readonly int[] Contexts = [1, 63, 64, 65, 1025]; // 1025: 9 splits of 128, two chunks each

    [Fact]
    public void Decode_tokens_match_the_reference_on_both_sides_of_every_split_boundary()
    {
        var c = NewCase(1, 4, 1, 64, 16, Contexts, Contexts.Select(_ => 1).ToArray());
        Tolerance.AssertClose(AttentionKernelsTests.Run(Device, c), Reference(c), 1e-5, 1e-5, $"contexts {string.Join(",", Contexts)}");
    }

    [Theory]
    [InlineData(4, 4, 32, 8)]    // MHA
    [InlineData(8, 2, 64, 16)]   // GQA 4 (Llama-3.2-1B's ratio and head_dim)
    [InlineData(8, 1, 128, 5)]   // MQA, 8 heads: one full head group
    [InlineData(12, 1, 64, 16)]  // 12 heads on one KV head: two head groups (8 + 4)
    [InlineData(6, 2, 256, 3)]   // GQA 3, the widest head
    [InlineData(6, 2, 96, 8)]    // not a power of two: served by another kernel (the split kernel's value lanes need 32 % (96 / 16) == 0)
    public void Head_shapes_match_the_reference(int heads, int kvHeads, int headDim, int blockSize)
    {
        var c = NewCase(heads * 100 + headDim, heads, kvHeads, headDim, blockSize, [1, 130, 300], [1, 1, 1]);
        Tolerance.AssertClose(AttentionKernelsTests.Run(Device, c), Reference(c), 1e-5, 1e-5, $"heads {heads}/{kvHeads} dim {headDim} block {blockSize}");
    }

    [Theory]
    [InlineData(4, 1, 64, 16)]  // Llama-3.2-1B's group of 4 heads
    [InlineData(8, 1, 128, 8)]  // a full group of 8, two score and two value rounds
    public void Unmapped_blocks_contribute_nothing(int heads, int kvHeads, int headDim, int blockSize)
    {
        // Context 300 (five splits of 64): a block inside the first split, the blocks of the whole second split and one
        // in the last unmapped; context 40 (one split, written out directly): its first block.
        int[] lengths = [300, 40];
        int[][] unmapped = [[64 / blockSize - 2, .. Enumerable.Range(64 / blockSize, 64 / blockSize), 280 / blockSize], [0]];
        var c = NewCase(7, heads, kvHeads, headDim, blockSize, lengths, [1, 1]);
        var tables = c.Tables.ToArray();
        for (int s = 0; s < lengths.Length; s++)
            foreach (int b in unmapped[s])
                tables[s * c.MaxBlocks + b] = -1; // also leaves the cache rows unwritten (Run's slots are negative)

        // The reference attends to the mapped positions alone: the sequences with the unmapped positions left out.
        int kvWidth = kvHeads * headDim;
        bool Mapped(int s, int p) => !unmapped[s].Contains(p / blockSize);
        float[] Compact(float[] rows, int s) =>
            Enumerable.Range(0, lengths[s]).Where(p => Mapped(s, p)).SelectMany(p => rows.Skip(p * kvWidth).Take(kvWidth)).ToArray();
        var positions = c.TokenPos.Select((p, t) => Enumerable.Range(0, p + 1).Count(x => Mapped(c.TokenSeq[t], x)) - 1).ToArray();
        var expected = AttentionReference.Attend(c.Q, c.Keys.Select(Compact).ToArray(), c.Values.Select(Compact).ToArray(),
            c.TokenSeq, positions, heads, kvHeads, headDim, 1 / Math.Sqrt(headDim));
        Tolerance.AssertClose(AttentionKernelsTests.Run(Device, c with { Tables = tables }), expected, 1e-5, 1e-5, $"heads {heads}/{kvHeads} dim {headDim}");
    }

    [Fact]
    public void A_prefill_chunk_beside_decode_tokens_matches_the_reference()
    {
        var c = NewCase(3, 2, 1, 32, 16, [80, 70], [40, 1]); // a prompt's second chunk, positions 40..79, across the first boundary
        Tolerance.AssertClose(AttentionKernelsTests.Run(Device, c), Reference(c), 1e-5, 1e-5, "prefill chunk");
    }

    [Fact]
    public void The_wide_kernel_still_matches_the_reference()
    {
        using var ops = new AttentionOps(Device) { SplitContext = false };
        var c = NewCase(4, 4, 1, 64, 16, [1, 65, 600], [1, 1, 8]);
        Tolerance.AssertClose(AttentionKernelsTests.Run(Device, c, ops), Reference(c), 1e-5, 1e-5, "wide kernel");
    }

    [Fact]
    public void A_token_gives_the_same_bits_alone_beside_other_tokens_and_at_any_launch_size()
    {
        const int heads = 4, kvHeads = 1, headDim = 64, width = heads * headDim;
        int[] lengths = [300, 1, 65, 200, 90];
        // Token 0 (sequence 0, context 300) alone; then beside decode tokens of other contexts and a 10-token prefill chunk.
        var alone = NewCase(5, heads, kvHeads, headDim, 16, lengths, [1, 0, 0, 0, 0]);
        var batched = NewCase(5, heads, kvHeads, headDim, 16, lengths, [1, 1, 1, 1, 10]);
        Assert.Equal(alone.Q.AsSpan(0, width).ToArray(), batched.Q.AsSpan(0, width).ToArray()); // same seed: same query
        var expected = Bits(AttentionKernelsTests.Run(Device, alone));

        var together = AttentionKernelsTests.Run(Device, batched);
        Assert.Equal(expected, Bits(together.AsSpan(0, width).ToArray()));
        // A workspace of one token's records (the block table reaches 304 positions: 5 splits a token): a launch per token.
        using var oneTokenLaunches = new AttentionOps(Device, workspaceFloats: heads * AttentionOps.GridSplitsFor(304) * (headDim + 4));
        var split = AttentionKernelsTests.Run(Device, batched, oneTokenLaunches);
        Assert.Equal(expected, Bits(split.AsSpan(0, width).ToArray()));
        Assert.Equal(Bits(together), Bits(split));
    }

    [Fact]
    public void Split_boundaries_depend_on_the_context_alone()
    {
        Assert.Equal(1, AttentionOps.SplitCount(0));
        Assert.Equal(1, AttentionOps.SplitCount(1));
        Assert.Equal(1, AttentionOps.SplitCount(64));
        Assert.Equal(2, AttentionOps.SplitCount(65));
        Assert.Equal(16, AttentionOps.SplitCount(1024));
        Assert.Equal((128, 9), (AttentionOps.SplitLength(1025), AttentionOps.SplitCount(1025)));
        Assert.Equal((8192, 16), (AttentionOps.SplitLength(131072), AttentionOps.SplitCount(131072)));
        Assert.Equal(16, AttentionOps.SplitCount(int.MaxValue));
        for (int ctx = 1; ctx < 5000; ctx += 7)
        {
            int length = AttentionOps.SplitLength(ctx), count = AttentionOps.SplitCount(ctx);
            Assert.True(count <= AttentionOps.MaxSplits && length % AttentionOps.SplitChunk == 0);
            Assert.True((count - 1) * length < ctx && count * length >= ctx, $"context {ctx}: {count} splits of {length}");
        }
    }

    static int[] Bits(float[] values) => values.Select(BitConverter.SingleToInt32Bits).ToArray();
}
