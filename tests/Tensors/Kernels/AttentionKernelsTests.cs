using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// Paged attention against a contiguous (unpaged) reference: several sequences of random lengths whose blocks
/// are scattered in the cache, queried by a mix of prefill chunks and single decode tokens, with GQA and MQA.
/// </summary>
public class AttentionKernelsTests
{
    internal sealed record Case(int Heads, int KvHeads, int HeadDim, int BlockSize, int NumBlocks, int MaxBlocks,
        float[][] Keys, float[][] Values, int[] Tables, int[] TokenSeq, int[] TokenPos, float[] Q);

    /// <param name="maxLength">longest cached sequence</param>
    internal static Case NewCase(int seed, int maxLength = 20)
    {
        var rnd = new RandomData(seed);
        int kvHeads = rnd.Int(1, 3), heads = kvHeads * rnd.Int(1, 3);
        int[] dims = [2, 16, 31, 48, 64, 80];
        int headDim = dims[rnd.Int(0, dims.Length - 1)], blockSize = rnd.Int(1, 8), seqs = rnd.Int(1, 3);
        int kvWidth = kvHeads * headDim;
        var lengths = Enumerable.Range(0, seqs).Select(_ => rnd.Int(1, maxLength)).ToArray();
        int maxBlocks = lengths.Max() / blockSize + 1;
        int numBlocks = seqs * maxBlocks + 2;
        // Physical blocks: a shuffled permutation split among the sequences.
        var perm = Enumerable.Range(0, numBlocks).OrderBy(_ => rnd.Random.Next()).ToArray();
        var tables = new int[seqs * maxBlocks];
        for (int i = 0; i < tables.Length; i++) tables[i] = perm[i];
        var keys = lengths.Select(l => rnd.Floats(l * kvWidth)).ToArray();
        var values = lengths.Select(l => rnd.Floats(l * kvWidth)).ToArray();
        var seqOf = new List<int>();
        var posOf = new List<int>();
        for (int s = 0; s < seqs; s++)
        {
            int chunk = rnd.Int(0, 1) == 0 ? 1 : rnd.Int(1, lengths[s]); // decode token or prefill chunk ending at the last position
            for (int p = lengths[s] - chunk; p < lengths[s]; p++)
            {
                seqOf.Add(s);
                posOf.Add(p);
            }
        }
        return new Case(heads, kvHeads, headDim, blockSize, numBlocks, maxBlocks, keys, values, tables, seqOf.ToArray(), posOf.ToArray(),
            rnd.Floats(seqOf.Count * heads * headDim));
    }

    /// <param name="ops">the attention family to run (default: the device's own)</param>
    internal static float[] Run(ComputeDevice device, Case c, AttentionOps? ops = null)
    {
        ops ??= device.Attention;
        int kvWidth = c.KvHeads * c.HeadDim, tokens = c.TokenSeq.Length;
        using var kCache = device.Zeros(DType.F32, c.NumBlocks, c.BlockSize, c.KvHeads, c.HeadDim);
        using var vCache = device.Zeros(DType.F32, c.NumBlocks, c.BlockSize, c.KvHeads, c.HeadDim);
        for (int s = 0; s < c.Keys.Length; s++)
        {
            int len = c.Keys[s].Length / kvWidth;
            var slots = Enumerable.Range(0, len).Select(p => c.Tables[s * c.MaxBlocks + p / c.BlockSize] * c.BlockSize + p % c.BlockSize).ToArray();
            using var k = device.Upload(c.Keys[s], len, kvWidth);
            using var v = device.Upload(c.Values[s], len, kvWidth);
            using var slotTensor = device.Upload(slots, len);
            ops.WriteKv(kCache, vCache, k, v, slotTensor);
        }
        using var q = device.Upload(c.Q, tokens, c.Heads * c.HeadDim);
        using var output = device.Allocate(DType.F32, tokens, c.Heads * c.HeadDim);
        using var tables = device.Upload(c.Tables, c.Keys.Length, c.MaxBlocks);
        using var seq = device.Upload(c.TokenSeq, tokens);
        using var pos = device.Upload(c.TokenPos, tokens);
        ops.PagedAttention(output, q, kCache, vCache, tables, seq, pos, c.Heads, c.KvHeads, c.HeadDim, 1f / MathF.Sqrt(c.HeadDim));
        return output.ToArray<float>();
    }

    [Property(MaxTest = 20)]
    public void Paged_attention_matches_contiguous_reference_on_every_device(int seed)
    {
        var c = NewCase(seed);
        var expected = AttentionReference.Attend(c.Q, c.Keys, c.Values, c.TokenSeq, c.TokenPos, c.Heads, c.KvHeads, c.HeadDim, 1 / Math.Sqrt(c.HeadDim));
        foreach (var device in TestDevices.All)
            Tolerance.AssertClose(Run(device, c), expected, 1e-5, 1e-5, $"{device} heads {c.Heads}/{c.KvHeads} dim {c.HeadDim} block {c.BlockSize}");
    }

    [Property(MaxTest = 8)]
    public void Configured_device_equals_the_cpu_accelerator(int seed)
    {
        var c = NewCase(seed);
        Tolerance.AssertClose(Run(TestDevices.Configured, c), Run(TestDevices.Cpu, c), 1e-5, 1e-5);
    }

    /// <summary>
    /// The fused rotate-and-write op gives RoPE then the cache write bit for bit: rotated q and k, and the cache, with a
    /// slot of −1 (skipped) and a position past the cos/sin table (left unrotated, still written).
    /// </summary>
    [Property(MaxTest = 10)]
    public void Rotate_and_write_kv_equals_rope_then_write_on_every_device(int seed)
    {
        var rnd = new RandomData(seed);
        int headDim = 2 * rnd.Int(1, 40), kvHeads = rnd.Int(1, 3), heads = kvHeads * rnd.Int(1, 3), tokens = rnd.Int(1, 9);
        int blockSize = rnd.Int(1, 4), numBlocks = tokens + 2, maxPositions = 16;
        var q = rnd.Floats(tokens * heads * headDim);
        var k = rnd.Floats(tokens * kvHeads * headDim);
        var v = rnd.Floats(tokens * kvHeads * headDim);
        var positions = Enumerable.Range(0, tokens).Select(_ => rnd.Int(0, maxPositions)).ToArray(); // maxPositions: outside the table
        var slots = Enumerable.Range(0, numBlocks * blockSize).OrderBy(_ => rnd.Random.Next()).Take(tokens).ToArray();
        slots[rnd.Int(0, tokens - 1)] = -1;
        var table = RopeOps.CosSinTable(rnd.Floats(headDim / 2), maxPositions);
        foreach (var device in TestDevices.All)
        {
            float[][] Run(bool fused)
            {
                using var qt = device.Upload(q, tokens, heads * headDim);
                using var kt = device.Upload(k, tokens, kvHeads * headDim);
                using var vt = device.Upload(v, tokens, kvHeads * headDim);
                using var pos = device.Upload(positions, tokens);
                using var cs = device.Upload(table, maxPositions, headDim / 2, 2);
                using var slotTensor = device.Upload(slots, tokens);
                using var kCache = device.Zeros(DType.F32, numBlocks, blockSize, kvHeads, headDim);
                using var vCache = device.Zeros(DType.F32, numBlocks, blockSize, kvHeads, headDim);
                if (fused) device.Attention.RotateAndWriteKv(qt, kt, vt, pos, cs, headDim, kCache, vCache, slotTensor);
                else
                {
                    device.Rope.ApplyCached(qt, kt, pos, cs, headDim);
                    device.Attention.WriteKv(kCache, vCache, kt, vt, slotTensor);
                }
                return [qt.ToArray<float>(), kt.ToArray<float>(), kCache.ToArray<float>(), vCache.ToArray<float>()];
            }
            var separate = Run(fused: false);
            var together = Run(fused: true);
            for (int i = 0; i < separate.Length; i++) Assert.Equal(separate[i], together[i]);
        }
    }

    [Fact]
    public void Attention_rejects_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var q = d.Zeros(DType.F32, 2, 16);
        using var o = d.Zeros(DType.F32, 2, 16);
        using var kc = d.Zeros(DType.F32, 4, 2, 1, 8);
        using var vc = d.Zeros(DType.F32, 4, 2, 1, 8);
        using var bt = d.Zeros(DType.I32, 1, 4);
        using var seq = d.Zeros(DType.I32, 2);
        using var pos = d.Zeros(DType.I32, 2);
        Assert.Equal("numKvHeads", Assert.Throws<ArgumentOutOfRangeException>(() => d.Attention.PagedAttention(o, q, kc, vc, bt, seq, pos, 2, 3, 8, 1)).ParamName);
        Assert.Equal("headDim", Assert.Throws<ArgumentOutOfRangeException>(() => d.Attention.PagedAttention(o, q, kc, vc, bt, seq, pos, 2, 1, 300, 1)).ParamName);
        Assert.Equal("kCache", Assert.Throws<ArgumentException>(() => d.Attention.PagedAttention(o, q, kc, vc, bt, seq, pos, 4, 2, 4, 1)).ParamName);
        Assert.Equal("tokenPos", Assert.Throws<ArgumentException>(() => d.Attention.PagedAttention(o, q, kc, vc, bt, seq, bt, 2, 1, 8, 1)).ParamName);
        using var k = d.Zeros(DType.F32, 2, 8);
        using var badSlots = d.Zeros(DType.F32, 2);
        Assert.Equal("slotMapping", Assert.Throws<ArgumentException>(() => d.Attention.WriteKv(kc, vc, k, k, badSlots)).ParamName);
        using var cs = d.Zeros(DType.F32, 8, 4, 2);
        Assert.Equal("slotMapping", Assert.Throws<ArgumentException>(() => d.Attention.RotateAndWriteKv(q, k, k, pos, cs, 8, kc, vc, badSlots)).ParamName);
        Assert.Equal("headDim", Assert.Throws<ArgumentOutOfRangeException>(() => d.Attention.RotateAndWriteKv(q, k, k, pos, cs, 7, kc, vc, seq)).ParamName);

        // q, k and v must not share memory: v is copied while k is rotated. Views of one buffer that only touch are fine.
        using var qkv = d.Zeros(DType.F32, 2, 32);
        using var rows = qkv.Reshape(4, 16);
        using var qv = rows.Slice(0, 2);
        using var kv = rows.Slice(2, 2).Reshape(4, 8).Slice(0, 2);
        using var vv = rows.Slice(2, 2).Reshape(4, 8).Slice(2, 2);
        using var qPart = rows.Slice(1, 2).Reshape(4, 8).Slice(0, 2);
        using var qShifted = rows.Slice(1, 2);
        d.Attention.RotateAndWriteKv(qv, kv, vv, pos, cs, 8, kc, vc, seq);
        Assert.Equal("k", Assert.Throws<ArgumentException>(() => d.Attention.RotateAndWriteKv(q, k, k, pos, cs, 8, kc, vc, seq)).ParamName);
        Assert.Equal("q", Assert.Throws<ArgumentException>(() => d.Attention.RotateAndWriteKv(qv, qPart, vv, pos, cs, 8, kc, vc, seq)).ParamName);
        Assert.Equal("q", Assert.Throws<ArgumentException>(() => d.Attention.RotateAndWriteKv(qShifted, kv, vv, pos, cs, 8, kc, vc, seq)).ParamName);
    }
}
