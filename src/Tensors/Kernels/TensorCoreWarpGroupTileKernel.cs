using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// The tile kernel's Hopper build: each warpgroup's chunk MMAs issued as wgmma m64n64k16, the activations read by the
// tensor cores from the stage.
internal sealed partial class TensorCoreLinear
{
    const int TileStageWords = 3 * 2 * 512; // a buffer of the wgmma tile stage: [hi, mid, lo][k16 half] blocks of 2 KB

    /// <summary>
    /// <see cref="TileKernel{TOps}"/> with a chunk's MMAs issued by the warpgroups (<see cref="ITensorCoreOps.WarpGroupTileChunk"/>,
    /// sm_90a): the same products in the same order per output (each token tile's chain: half 0 against hi, mid, lo, then
    /// half 1; chunks in slice order, each slice's sum folded into the total), so the same bits. Same grid, ring and
    /// barriers; warpgroup j owns rows 64j … 64j+63 of the group's 128 and all 64 tokens, its warp w rows 16w … 16w+15 (A
    /// from registers, loaded from the ring as the tile kernel's fragments: 2 shared loads a chunk instead of 16). The
    /// activations are staged as wgmma's B, double-buffered: per buffer six 2 KB blocks (2 · part + half), each eight
    /// 8-token groups of K-major core matrices without swizzle (<see cref="StageIndex"/>, as the row kernel's 32 tokens).
    /// </summary>
    static void WarpGroupTileKernel<TOps>(ArrayView<F4> x, LinearSegments seg, int tokens, int k) where TOps : struct, ITensorCoreOps
    {
        // The weights' ring first, the stage second: FirstSharedAddress and SecondSharedAddress name them.
        var ring = SharedMemory.Allocate<U4>(TileRing * TileRows * 4);     // [stage][row][unit]
        var stage = SharedMemory.Allocate<U4>(2 * TileStageWords / 4);     // [buffer][part][half][token group][k half][token][k pair]
        uint ringAddress = default(TOps).FirstSharedAddress();
        uint stageAddress = default(TOps).SecondSharedAddress();
        var words = stage.Cast<uint>();

        int bx = Select(seg, Grid.IdxX, out var w, out long wAddress, out var y, out int n);
        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int row0 = bx * TileRows, tok0 = Grid.IdxY * TileTokens;
        int units = k / 8;
        int chunks = (k + ChunkK - 1) / ChunkK;

        // Thread i copies unit (i & 3) of rows i >> 2 and 64 + (i >> 2) of each chunk's weights (as the tile kernel), and
        // stages the same unit of token i >> 2's activations where wgmma's B reads them.
        int i = Group.IdxX;
        int sUnit = i & 3, sRow = i >> 2;
        long wRow0 = (long)(row0 + sRow) * units, wRow1 = (long)(row0 + sRow + 64) * units;
        bool wOk0 = row0 + sRow < n, wOk1 = row0 + sRow + 64 < n;
        int sToken = tok0 + (i >> 2), sAt = StageIndex(i >> 2, sUnit);
        long xRow = (long)sToken * (units * 2);
        bool xOk = sToken < tokens;

        // Chunks in slice order: (s, c) multiplied now, (s1, c1) next, (sIssue, cIssue) the next to copy.
        int s = 0, c = 0, slot = 0;
        int sIssue = 0, cIssue = 0;
        for (int r = 0; r < TileRing - 1; r++)
        {
            CopyTileWeights<TOps>(ring, r, ringAddress, w, wAddress, wRow0, wRow1, wOk0, wOk1, sIssue < Slices && cIssue < chunks, cIssue * 4 + sUnit, units);
            Advance(ref sIssue, ref cIssue, chunks);
        }
        var (x0, x1) = Activations(x, xRow, xOk, c * 4 + sUnit, units);
        StageTile<TOps>(words, sAt, x0, x1);
        int s1 = s, c1 = c;
        Advance(ref s1, ref c1, chunks);
        default(TOps).WaitCopiesButOne(); // chunk 0's copies (chunk 1's may still be in flight)
        Group.Barrier();

        // Accumulators per token tile (this slice) and the running totals, four floats of an MMA's D each.
        F4 p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default, p6 = default, p7 = default;
        F4 d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
        int aAt = (warp * 16 + g) * 4 + t; // the lane's unit of row g of the warp's 16 in a ring stage (row g+8: 32 on)
        int buffer = 0;
        while (true)
        {
            // The stage two chunks ahead was last read before the previous barrier: copy into it.
            CopyTileWeights<TOps>(ring, (slot + TileRing - 1) % TileRing, ringAddress, w, wAddress, wRow0, wRow1, wOk0, wOk1,
                sIssue < Slices && cIssue < chunks, cIssue * 4 + sUnit, units);
            Advance(ref sIssue, ref cIssue, chunks);
            bool more = s1 < Slices && c1 < chunks;
            if (more) (x0, x1) = Activations(x, xRow, xOk, c1 * 4 + sUnit, units);

            int wb = slot * TileRows * 4 + aAt;
            default(TOps).WarpGroupTileChunk(ref p0, ref p1, ref p2, ref p3, ref p4, ref p5, ref p6, ref p7,
                ring[wb], ring[wb + 32], words, buffer * TileStageWords, stageAddress);

            if (s1 != s)
            {
                // Slice s is complete: the totals take its sums, as the split-k kernel adds warp s's partials.
                Fold(ref d0, ref p0); Fold(ref d1, ref p1); Fold(ref d2, ref p2); Fold(ref d3, ref p3);
                Fold(ref d4, ref p4); Fold(ref d5, ref p5); Fold(ref d6, ref p6); Fold(ref d7, ref p7);
            }
            if (!more) break;

            // Everyone's MMAs finished reading the other buffer a chunk ago (the barrier below), so it can take the next chunk.
            buffer ^= 1;
            StageTile<TOps>(words, buffer * TileStageWords + sAt, x0, x1);
            default(TOps).WaitCopiesButOne(); // this thread's copies of the next chunk (the newest group may pend)
            Group.Barrier();                  // … and everyone's, with the staged activations
            slot = (slot + 1) % TileRing;
            (s, c) = (s1, c1);
            Advance(ref s1, ref c1, chunks);
        }

        int rA = row0 + warp * 16 + g, ta = tok0 + 2 * t;
        StoreTile(y, n, tokens, ta, ta + 1, rA, rA + 8, d0.X, d0.Y, d0.Z, d0.W);
        StoreTile(y, n, tokens, ta + 8, ta + 9, rA, rA + 8, d1.X, d1.Y, d1.Z, d1.W);
        StoreTile(y, n, tokens, ta + 16, ta + 17, rA, rA + 8, d2.X, d2.Y, d2.Z, d2.W);
        StoreTile(y, n, tokens, ta + 24, ta + 25, rA, rA + 8, d3.X, d3.Y, d3.Z, d3.W);
        StoreTile(y, n, tokens, ta + 32, ta + 33, rA, rA + 8, d4.X, d4.Y, d4.Z, d4.W);
        StoreTile(y, n, tokens, ta + 40, ta + 41, rA, rA + 8, d5.X, d5.Y, d5.Z, d5.W);
        StoreTile(y, n, tokens, ta + 48, ta + 49, rA, rA + 8, d6.X, d6.Y, d6.Z, d6.W);
        StoreTile(y, n, tokens, ta + 56, ta + 57, rA, rA + 8, d7.X, d7.Y, d7.Z, d7.W);
    }

    /// <summary>
    /// A thread's 8 activations split into hi, mid and lo and written where wgmma's B reads them (<paramref name="at"/>:
    /// the buffer's word of its token and unit in block 0): as in <see cref="WarpGroupChunks"/>, unit t's k pairs (8t,
    /// 8t+1) and (8t+2, 8t+3) are pairs t and t + 4 of the first k16 half, the other two of the second (the next block);
    /// mid and lo two and four blocks on. Then the fence that lets the tensor cores see the writes.
    /// </summary>
    static void StageTile<TOps>(ArrayView<uint> words, int at, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps
    {
        SplitUnit<TOps>(x0, x1, out var hi, out var mid, out var lo);
        TilePart(words, at, hi);
        TilePart(words, at + 1024, mid);
        TilePart(words, at + 2048, lo);
        default(TOps).FenceProxyAsync();
    }

    /// <summary>One part's four words: k pairs t and t + 4 (128 bytes on) of both k16 halves (2 KB blocks).</summary>
    static void TilePart(ArrayView<uint> words, int at, U4 u)
    {
        words[at] = u.X;
        words[at + 32] = u.Y;
        words[at + 512] = u.Z;
        words[at + 544] = u.W;
    }
}
