using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

internal sealed partial class TensorCoreLinear
{
    const int TileWarps = 8;        // the tile kernel: 8 warps (mma.sync: 4 along rows × 2 along tokens; wgmma: 2 warpgroups)
    const int TileRows = 128;       // a group's rows (mma.sync: 32 a warp; wgmma: 64 a warpgroup)
    const int TileTokens = 64;      // a group's tokens (mma.sync: 32 a warp; wgmma: all 64 in each warpgroup)
    const int TileRing = 3;         // the tile kernel's weight stages: one multiplied, two copying (3 × 8 KB)

    /// <summary>
    /// The tile kernel's groups for a launch of <paramref name="rowGroups"/> 64-row blocks: 128 rows × 64 tokens each.
    /// It is picked only with at least two waves of two groups per SM (H100: the 128-token prompt of a bs1 request took
    /// 12.7 ms to its first token with tiles, 7.5 without, where q/k/v has 48 groups; 4096 × 4096 at 2048 tokens, 1024
    /// groups, 1.302 → 0.956 ms).
    /// </summary>
    static long TileGroups(int tokens, int rowGroups) => (rowGroups + 1L) / 2 * ((tokens + TileTokens - 1) / TileTokens);

    /// <summary>
    /// The same products as <see cref="Kernel{TTiles, TOps}"/> and <see cref="RowKernel{TOps, TChunk}"/>, bit for bit, for many
    /// tokens (prefill): a group of 8 warps owns 128 output rows × 64 tokens and walks every chunk of k in slice order
    /// (slice s = the chunks c ≡ s mod 8, ascending, into one accumulator per output; the slice's sum added to a running
    /// total after it, as the split-k kernel adds its warps' sums in warp order). Each chunk's weights (128 rows × 32 k,
    /// row-major: a lane's two 16-byte units are its A fragments, as split-k loads them from global memory) are copied with
    /// cp.async into a ring of three stages, two chunks ahead of the one multiplied; its activations (64 tokens × 32 k) are
    /// loaded two chunks ahead, split into hi/mid/lo once per group and staged a chunk ahead, double-buffered. One barrier
    /// a chunk: after it, every thread's copies of the next chunk have landed and its activations are staged.
    /// <typeparamref name="TChunk"/> lays the
    /// stage out and issues the MMAs: each warp's mma.sync against fragments (<see cref="WarpTileChunks"/>), or each
    /// warpgroup's wgmma reading the stage itself (<see cref="WarpGroupTileChunks"/>, Hopper).
    /// </summary>
    static void TileKernel<TOps, TChunk>(ArrayView<F4> x, LinearSegments seg, int tokens, int k)
        where TOps : struct, ITensorCoreOps where TChunk : struct, ITileChunk
    {
        // The weights' ring first, the stage second: FirstSharedAddress and SecondSharedAddress name them.
        var ring = SharedMemory.Allocate<U4>(TileRing * TileRows * 4);         // [stage][row][unit]
        var stage = SharedMemory.Allocate<U4>(2 * 3 * (TileTokens / 8) * 32);  // [buffer][a chunk's split activations, as TChunk lays them out]
        uint ringAddress = default(TOps).FirstSharedAddress();

        int bx = Select(seg, Grid.IdxX, out var w, out long wAddress, out var y, out int n);
        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int row0 = bx * TileRows, tok0 = Grid.IdxY * TileTokens;
        int units = k / 8;
        int chunks = (k + ChunkK - 1) / ChunkK;

        // Thread i copies unit (i & 3) of rows i >> 2 and 64 + (i >> 2) of each chunk's weights, and stages the same unit
        // of token i >> 2's activations.
        int i = Group.IdxX;
        int sUnit = i & 3, sRow = i >> 2;
        long wRow0 = (long)(row0 + sRow) * units, wRow1 = (long)(row0 + sRow + 64) * units;
        bool wOk0 = row0 + sRow < n, wOk1 = row0 + sRow + 64 < n;
        int sToken = tok0 + (i >> 2), sAt = default(TChunk).StageAt(i);
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
        var (f0, f1) = Activations(x, xRow, xOk, c * 4 + sUnit, units);
        default(TChunk).Stage<TOps>(stage, 0, sAt, f0, f1);
        // The next chunk's activations are in registers before the loop; each iteration asks for the one after it, so an
        // L2 round trip has a whole chunk to land before its staging needs it (the row kernel's order).
        int s1 = s, c1 = c;
        Advance(ref s1, ref c1, chunks);
        var (x0, x1) = Activations(x, xRow, s1 < Slices && c1 < chunks && xOk, c1 * 4 + sUnit, units);
        default(TOps).WaitCopiesButOne(); // chunk 0's copies (chunk 1's may still be in flight)
        Group.Barrier();

        // The warp's eight accumulators (this slice) and their running totals, four floats of an MMA's D each.
        F4 p0 = default, p1 = default, p2 = default, p3 = default, p4 = default, p5 = default, p6 = default, p7 = default;
        F4 d0 = default, d1 = default, d2 = default, d3 = default, d4 = default, d5 = default, d6 = default, d7 = default;
        int buffer = 0;
        bool more = true;
        while (more)
        {
            // The chunks of slice s, then the totals take its sums, as the split-k kernel adds warp s's partials (the
            // row kernel's loop; the last chunk always ends a slice).
            bool sliceDone = false;
            while (!sliceDone)
            {
                // The stage two chunks ahead was last read before the previous barrier: copy into it.
                CopyTileWeights<TOps>(ring, PreviousSlot(slot, TileRing), ringAddress, w, wAddress, wRow0, wRow1, wOk0, wOk1,
                    sIssue < Slices && cIssue < chunks, cIssue * 4 + sUnit, units);
                Advance(ref sIssue, ref cIssue, chunks);
                more = s1 < Slices && c1 < chunks;
                int s2 = s1, c2 = c1;
                Advance(ref s2, ref c2, chunks);
                var (n0, n1) = Activations(x, xRow, more && s2 < Slices && c2 < chunks && xOk, c2 * 4 + sUnit, units);

                default(TChunk).Multiply<TOps>(ring, slot, stage, buffer, warp, lane, ref p0, ref p1, ref p2, ref p3, ref p4, ref p5, ref p6, ref p7);
                sliceDone = s1 != s;
                if (more)
                {
                    // Everyone finished reading the other buffer a chunk ago (the barrier below), so it can take the next chunk.
                    buffer ^= 1;
                    default(TChunk).Stage<TOps>(stage, buffer, sAt, x0, x1);
                    (x0, x1) = (n0, n1);
                    default(TOps).WaitCopiesButOne(); // this thread's copies of the next chunk (the newest group may pend)
                    Group.Barrier();                  // … and everyone's, with the staged activations
                    slot = NextSlot(slot, TileRing);
                }
                (s, c) = (s1, c1);
                (s1, c1) = (s2, c2);
            }
            Fold(ref d0, ref p0); Fold(ref d1, ref p1); Fold(ref d2, ref p2); Fold(ref d3, ref p3);
            Fold(ref d4, ref p4); Fold(ref d5, ref p5); Fold(ref d6, ref p6); Fold(ref d7, ref p7);
        }

        var (wRow, wToken) = default(TChunk).Origin(warp);
        int rA = row0 + wRow + (lane >> 2), ta = tok0 + wToken + 2 * (lane & 3);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 0, d0);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 1, d1);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 2, d2);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 3, d3);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 4, d4);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 5, d5);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 6, d6);
        StoreAccumulator<TChunk>(y, n, tokens, rA, ta, 7, d7);
    }

    /// <summary>Accumulator <paramref name="j"/> (rows rA, rA + 8 and tokens ta, ta + 1 of its tile) into y.</summary>
    static void StoreAccumulator<TChunk>(ArrayView<float> y, int n, int tokens, int rA, int ta, int j, F4 d) where TChunk : struct, ITileChunk
    {
        var (dr, dt) = default(TChunk).Offset(j);
        StoreTile(y, n, tokens, ta + dt, ta + dt + 1, rA + dr, rA + dr + 8, d.X, d.Y, d.Z, d.W);
    }

    /// <summary>total += slice; slice = 0 (the order the split-k kernel adds its warps' sums in).</summary>
    static void Fold(ref F4 total, ref F4 slice)
    {
        total.X += slice.X;
        total.Y += slice.Y;
        total.Z += slice.Z;
        total.W += slice.W;
        slice = default;
    }

    /// <summary>
    /// A thread's two weight units of one chunk (unit <paramref name="unit"/> of rows i/4 and 64 + i/4; zeros past k, n or
    /// the last chunk) copied asynchronously into ring stage <paramref name="slot"/>, row-major, as one group.
    /// </summary>
    static void CopyTileWeights<TOps>(ArrayView<U4> ring, int slot, uint ringAddress, ArrayView<U4> w, long wAddress, long wRow0, long wRow1,
        bool wOk0, bool wOk1, bool chunk, int unit, int units) where TOps : struct, ITensorCoreOps
    {
        int at = slot * TileRows * 4 + Group.IdxX; // row i/4, unit i%4: thread i's place in rows 0–63
        bool ok = chunk && unit < units;
        default(TOps).CopyAsync(ring, at, ringAddress, w, wRow0 + unit, wAddress, ok && wOk0);
        default(TOps).CopyAsync(ring, at + 64 * 4, ringAddress, w, wRow1 + unit, wAddress, ok && wOk1);
        default(TOps).CommitCopies();
    }
}
