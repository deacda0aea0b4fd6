using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// The split-k kernel (up to 8 tokens; more when forced): a group of 8 warps owns 16 rows × 32 tokens, warp w the k
// chunks w, w + 8, …, and the warps' sums are added in warp order.
internal sealed partial class TensorCoreLinear
{
    /// <summary>
    /// The token tiles (of 8) a split-k group computes — a compile-time bound, so a decode kernel keeps no registers for
    /// tiles it never has — and whether it requests the next round's chunks ahead.
    /// </summary>
    interface ITiles
    {
        int Max { get; }
        bool Ahead { get; }
    }

    struct OneTile : ITiles
    {
        public readonly int Max => 1;
        public readonly bool Ahead => false;
    }

    /// <summary>
    /// One tile, four chunks in flight (96 registers where OneTile has 54). H100, one token, µs OneTile / this: 1B q/k/v
    /// 11.0 / 10.1, o 8.7 / 8.1, down 22.0 / 19.2, 8B o 17.9 / 16.8, down 48.9 / 45.9 (at most two groups per SM: the DRAM
    /// latency was not covered); but 8B q/k/v 23.3 / 27.1, 1B gate/up 35.0 / 37.5, lm_head 214.7 / 235.2 (more groups
    /// per SM, which the registers cost).
    /// </summary>
    struct OneTileAhead : ITiles
    {
        public readonly int Max => 1;
        public readonly bool Ahead => true;
    }

    struct FourTiles : ITiles
    {
        public readonly int Max => 4;
        public readonly bool Ahead => false;
    }

    static void Kernel<TTiles, TOps>(ArrayView<F4> x, LinearSegments seg, int tokens, int k) where TTiles : struct, ITiles where TOps : struct, ITensorCoreOps
    {
        var partial = SharedMemory.Allocate<float>(Warps * 16 * 32);

        // Which linear this group serves, and its 16 rows.
        int bx = Select(seg, Grid.IdxX, out var w, out long wAddress, out var y, out int n);

        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int rowA = bx * RowsPerGroup + g, rowB = rowA + 8;
        int tok0 = Grid.IdxY * TokensPerGroup;
        int tiles = (tokens - tok0 + 7) / 8;
        if (tiles > 4) tiles = 4;
        int units = k / 8;                       // 16-byte units per row
        int chunks = (k + ChunkK - 1) / ChunkK;
        long baseA = (long)rowA * units, baseB = (long)rowB * units;
        bool okA = rowA < n, okB = rowB < n;

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;

        long xRow = (long)(tok0 + g) * (units * 2);
        bool tokOk = tok0 + g < tokens;
        // Two chunks a round, both requested into registers before either is used (a cp.async ring three chunks deep
        // made one-token linears slower: H100, 1B down 22.0 → 29.0 µs, o 8.7 → 10.2; only lm_head gained, 214.7 → 195.6);
        // with TTiles.Ahead the next round's two are requested before this round's MMAs as well (four in flight, for
        // linears with at most two groups per SM).
        int step = 4 * Warps;
        bool ahead = default(TTiles).Ahead;
        // A programmatic launch starts before the kernels it depends on have finished: until it has waited for them it asks
        // L2 for its first chunks' weights (two a thread, four with TTiles.Ahead), which no kernel writes.
        for (int r = 0; r < (ahead ? 4 : 2); r++)
            PrefetchWeights<TOps>(wAddress, baseA, baseB, okA, okB, warp * 4 + t + r * step, units);
        default(TOps).WaitForPrerequisites();
        var n0 = ahead ? LoadChunk(w, x, baseA, baseB, okA, okB, warp * 4 + t, units, xRow, tokOk) : default;
        var n1 = ahead ? LoadChunk(w, x, baseA, baseB, okA, okB, warp * 4 + t + step, units, xRow, tokOk) : default;
        for (int c = warp; c < chunks; c += 2 * Warps)
        {
            int u0 = c * 4 + t, u1 = u0 + step;
            ChunkData k0, k1;
            if (ahead)
            {
                (k0, k1) = (n0, n1);
                n0 = LoadChunk(w, x, baseA, baseB, okA, okB, u0 + 2 * step, units, xRow, tokOk);
                n1 = LoadChunk(w, x, baseA, baseB, okA, okB, u0 + 3 * step, units, xRow, tokOk);
            }
            else
            {
                k0 = LoadChunk(w, x, baseA, baseB, okA, okB, u0, units, xRow, tokOk);
                k1 = LoadChunk(w, x, baseA, baseB, okA, okB, u1, units, xRow, tokOk);
            }
            Chunk<TTiles, TOps>(x, k0, u0, units, tok0 + g, tokens, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
            if (u1 - t >= units) continue;
            Chunk<TTiles, TOps>(x, k1, u1, units, tok0 + g, tokens, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
        }

        // Sum the warps' partials in warp order; warp 0 stores.
        int p = (warp * 32 + lane) * 16;
        partial[p + 0] = c00; partial[p + 1] = c01; partial[p + 2] = c02; partial[p + 3] = c03;
        partial[p + 4] = c10; partial[p + 5] = c11; partial[p + 6] = c12; partial[p + 7] = c13;
        partial[p + 8] = c20; partial[p + 9] = c21; partial[p + 10] = c22; partial[p + 11] = c23;
        partial[p + 12] = c30; partial[p + 13] = c31; partial[p + 14] = c32; partial[p + 15] = c33;
        Group.Barrier();
        if (warp != 0) return;
        for (int j = 0; j < tiles; j++)
        {
            float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
            for (int v = 0; v < Warps; v++)
            {
                int q = (v * 32 + lane) * 16 + j * 4;
                d0 += partial[q];
                d1 += partial[q + 1];
                d2 += partial[q + 2];
                d3 += partial[q + 3];
            }
            int ta = tok0 + j * 8 + 2 * t, tb = ta + 1;
            Store(y, n, tokens, ta, rowA, d0);
            Store(y, n, tokens, tb, rowA, d1);
            Store(y, n, tokens, ta, rowB, d2);
            Store(y, n, tokens, tb, rowB, d3);
        }
    }

    /// <summary>Asks L2 for unit <paramref name="unit"/> of rows g and g+8 (nothing past k or n).</summary>
    static void PrefetchWeights<TOps>(long wAddress, long baseA, long baseB, bool okA, bool okB, int unit, int units) where TOps : struct, ITensorCoreOps
    {
        if (unit >= units) return;
        if (okA) default(TOps).PrefetchL2(wAddress + (baseA + unit) * 16);
        if (okB) default(TOps).PrefetchL2(wAddress + (baseB + unit) * 16);
    }

    /// <summary>A lane's share of one 32-wide k chunk: rows g and g+8 of the weight, and its first tile's token.</summary>
    struct ChunkData
    {
        public U4 A, B;
        public F4 X0, X1;
    }

    static ChunkData LoadChunk(ArrayView<U4> w, ArrayView<F4> x, long baseA, long baseB, bool okA, bool okB, int unit, int units, long xRow, bool tokOk)
    {
        var c = default(ChunkData);
        if (unit >= units) return c; // past the end of k: zeros add nothing
        if (okA) c.A = w[baseA + unit];
        if (okB) c.B = w[baseB + unit];
        if (tokOk)
        {
            c.X0 = x[xRow + unit * 2];
            c.X1 = x[xRow + unit * 2 + 1];
        }
        return c;
    }

    /// <summary>
    /// One chunk against every tile of tokens: the first tile's activations came with the chunk, the others are loaded
    /// here, one tile at a time. (Requesting all tiles' activations before the first MMA took the kernel from 75 to 93
    /// registers and made 32-token linears slower on the H200: 1B gate/up 78 → 88 µs, 8B q/k/v 51 → 72 µs.)
    /// </summary>
    static void Chunk<TTiles, TOps>(ArrayView<F4> x, ChunkData k, int unit, int units, int token, int tokens, int tiles,
        ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
        ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
        where TTiles : struct, ITiles where TOps : struct, ITensorCoreOps
    {
        Mma<TOps>(k.A, k.B, k.X0, k.X1, ref c00, ref c01, ref c02, ref c03);
        if (default(TTiles).Max == 1) return;
        if (tiles > 1) Tile<TOps>(x, k.A, k.B, unit, units, token + 8, tokens, ref c10, ref c11, ref c12, ref c13);
        if (tiles > 2) Tile<TOps>(x, k.A, k.B, unit, units, token + 16, tokens, ref c20, ref c21, ref c22, ref c23);
        if (tiles > 3) Tile<TOps>(x, k.A, k.B, unit, units, token + 24, tokens, ref c30, ref c31, ref c32, ref c33);
    }

    /// <summary>One n-tile (8 tokens) × one 32-wide k chunk: six MMAs (two k16 halves × hi/mid/lo); a, b: rows g and g+8.</summary>
    static void Tile<TOps>(ArrayView<F4> x, U4 a, U4 b, int unit, int units, int token, int tokens,
        ref float d0, ref float d1, ref float d2, ref float d3) where TOps : struct, ITensorCoreOps
    {
        F4 x0 = default, x1 = default;
        if (token < tokens && unit < units)
        {
            long i = (long)token * (units * 2) + unit * 2;
            x0 = x[i];
            x1 = x[i + 1];
        }
        Mma<TOps>(a, b, x0, x1, ref d0, ref d1, ref d2, ref d3);
    }

    /// <summary>The six MMAs of a chunk for one tile: a, b are rows g and g+8; x0, x1 the lane's 8 activations.</summary>
    static void Mma<TOps>(U4 a, U4 b, F4 x0, F4 x1, ref float d0, ref float d1, ref float d2, ref float d3) where TOps : struct, ITensorCoreOps
    {
        SplitUnit<TOps>(x0, x1, out var hi, out var mid, out var lo);
        MmaSplit<TOps>(a, b, hi, mid, lo, ref d0, ref d1, ref d2, ref d3);
    }
}
