using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

internal sealed partial class TensorCoreLinear
{
    const int TileWarps = 8;        // the tile kernel: 8 warps, 4 along rows × 2 along tokens
    const int TileRows = 128;       // a group's rows: each warp 32 (two 16-row MMA tiles)
    const int TileTokens = 64;      // a group's tokens: each warp 32 (four 8-token MMA tiles)
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
    /// loaded a chunk ahead, split into hi/mid/lo once per group and double-buffered. One barrier a chunk: after it, every
    /// thread's copies of the next chunk have landed and its activations are staged. Warp (wr, wt) multiplies its two
    /// 16-row weight tiles against its four token tiles: 48 MMAs a chunk from 4 + 12 shared loads.
    /// </summary>
    static void TileKernel<TOps>(ArrayView<F4> x, LinearSegments seg, int tokens, int k) where TOps : struct, ITensorCoreOps
    {
        // The weights' ring comes first: FirstSharedAddress names the kernel's first shared allocation.
        var ring = SharedMemory.Allocate<U4>(TileRing * TileRows * 4);           // [stage][row][unit]
        var stageX = SharedMemory.Allocate<U4>(2 * 3 * (TileTokens / 8) * 32);   // [buffer][hi, mid, lo][tile][lane]
        uint ringAddress = default(TOps).FirstSharedAddress();

        int bx = Select(seg, Grid.IdxX, out var w, out long wAddress, out var y, out int n);
        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int wr = warp & 3, wt = warp >> 2;
        int row0 = bx * TileRows, tok0 = Grid.IdxY * TileTokens;
        int units = k / 8;
        int chunks = (k + ChunkK - 1) / ChunkK;

        // Thread i copies unit (i & 3) of rows i >> 2 and 64 + (i >> 2) of each chunk's weights, and stages the same unit
        // of token i >> 2's activations: the token's tile (i >> 5), lane ((i >> 2) & 7) * 4 + (i & 3), as the row kernel.
        int i = Group.IdxX;
        int sUnit = i & 3, sRow = i >> 2;
        long wRow0 = (long)(row0 + sRow) * units, wRow1 = (long)(row0 + sRow + 64) * units;
        bool wOk0 = row0 + sRow < n, wOk1 = row0 + sRow + 64 < n;
        int sToken = tok0 + (i >> 2), sAt = (i >> 5) * 32 + ((i >> 2) & 7) * 4 + sUnit;
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
        StageFragments<TOps>(stageX, sAt, 256, x0, x1);
        int s1 = s, c1 = c;
        Advance(ref s1, ref c1, chunks);
        default(TOps).WaitCopiesButOne(); // chunk 0's copies (chunk 1's may still be in flight)
        Group.Barrier();

        // Accumulators [m-tile][n-tile] (this slice) and the running totals, four floats of an MMA's D each.
        F4 c00 = default, c01 = default, c02 = default, c03 = default, c10 = default, c11 = default, c12 = default, c13 = default;
        F4 d00 = default, d01 = default, d02 = default, d03 = default, d10 = default, d11 = default, d12 = default, d13 = default;
        int aAt = (wr * 32 + g) * 4 + t;     // the lane's unit of its first weight row in a stage
        int bAt = wt * 4 * 32 + lane;        // the lane's fragment of the warp's first token tile
        int buffer = 0;
        while (true)
        {
            // The stage two chunks ahead was last read before the previous barrier: copy into it.
            CopyTileWeights<TOps>(ring, (slot + TileRing - 1) % TileRing, ringAddress, w, wAddress, wRow0, wRow1, wOk0, wOk1,
                sIssue < Slices && cIssue < chunks, cIssue * 4 + sUnit, units);
            Advance(ref sIssue, ref cIssue, chunks);
            bool more = s1 < Slices && c1 < chunks;
            if (more) (x0, x1) = Activations(x, xRow, xOk, c1 * 4 + sUnit, units);

            int wb = slot * TileRows * 4 + aAt, xb = buffer * 3 * 256 + bAt;
            U4 a0 = ring[wb], b0 = ring[wb + 32], a1 = ring[wb + 64], b1 = ring[wb + 96];
            TileMmas<TOps>(a0, b0, a1, b1, stageX, xb, ref c00, ref c10);
            TileMmas<TOps>(a0, b0, a1, b1, stageX, xb + 32, ref c01, ref c11);
            TileMmas<TOps>(a0, b0, a1, b1, stageX, xb + 64, ref c02, ref c12);
            TileMmas<TOps>(a0, b0, a1, b1, stageX, xb + 96, ref c03, ref c13);

            if (s1 != s)
            {
                // Slice s is complete: the totals take its sums, as the split-k kernel adds warp s's partials.
                Fold(ref d00, ref c00); Fold(ref d01, ref c01); Fold(ref d02, ref c02); Fold(ref d03, ref c03);
                Fold(ref d10, ref c10); Fold(ref d11, ref c11); Fold(ref d12, ref c12); Fold(ref d13, ref c13);
            }
            if (!more) break;

            // Everyone finished reading the other buffer a chunk ago (the barrier below), so it can take the next chunk.
            buffer ^= 1;
            StageFragments<TOps>(stageX, buffer * 3 * 256 + sAt, 256, x0, x1);
            default(TOps).WaitCopiesButOne(); // this thread's copies of the next chunk (the newest group may pend)
            Group.Barrier();                  // … and everyone's, with the staged activations
            slot = (slot + 1) % TileRing;
            (s, c) = (s1, c1);
            Advance(ref s1, ref c1, chunks);
        }

        int rA = row0 + wr * 32 + g, ta = tok0 + wt * 32 + 2 * t;
        StoreTile(y, n, tokens, ta, ta + 1, rA, rA + 8, d00.X, d00.Y, d00.Z, d00.W);
        StoreTile(y, n, tokens, ta + 8, ta + 9, rA, rA + 8, d01.X, d01.Y, d01.Z, d01.W);
        StoreTile(y, n, tokens, ta + 16, ta + 17, rA, rA + 8, d02.X, d02.Y, d02.Z, d02.W);
        StoreTile(y, n, tokens, ta + 24, ta + 25, rA, rA + 8, d03.X, d03.Y, d03.Z, d03.W);
        StoreTile(y, n, tokens, ta, ta + 1, rA + 16, rA + 24, d10.X, d10.Y, d10.Z, d10.W);
        StoreTile(y, n, tokens, ta + 8, ta + 9, rA + 16, rA + 24, d11.X, d11.Y, d11.Z, d11.W);
        StoreTile(y, n, tokens, ta + 16, ta + 17, rA + 16, rA + 24, d12.X, d12.Y, d12.Z, d12.W);
        StoreTile(y, n, tokens, ta + 24, ta + 25, rA + 16, rA + 24, d13.X, d13.Y, d13.Z, d13.W);
    }

    /// <summary>
    /// One token tile's staged hi/mid/lo fragments against both 16-row weight tiles (a0, b0: rows g and g+8 of the first,
    /// a1, b1 of the second): two accumulators, six MMAs each, in <see cref="MmaSplit{TOps}"/>'s order.
    /// </summary>
    static void TileMmas<TOps>(U4 a0, U4 b0, U4 a1, U4 b1, ArrayView<U4> stageX, int at, ref F4 top, ref F4 bottom)
        where TOps : struct, ITensorCoreOps
    {
        U4 hi = stageX[at], mid = stageX[at + 256], lo = stageX[at + 512];
        MmaSplit<TOps>(a0, b0, hi, mid, lo, ref top.X, ref top.Y, ref top.Z, ref top.W);
        MmaSplit<TOps>(a1, b1, hi, mid, lo, ref bottom.X, ref bottom.Y, ref bottom.Z, ref bottom.W);
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
