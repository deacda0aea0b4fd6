using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// The row kernel (9+ tokens): a group of 4 warps (or 8) owns 64 rows (128) × 32 tokens and walks k in slice order, its
// weights through a per-thread cp.async ring.
internal sealed partial class TensorCoreLinear
{
    /// <summary>
    /// The same products as <see cref="Kernel{TTiles, TOps}"/>, bit for bit, with the work split by rows instead of k: a group of 4 warps
    /// owns 64 output rows × 32 tokens, and every warp walks all k chunks in the split-k kernel's order — slice s (the chunks
    /// c ≡ s mod 8, the split-k kernel's warp s) in ascending c into one accumulator, added to a running total after each
    /// slice, as the split-k kernel adds its warps' sums in warp order. Each chunk's 32 × 32 activations are split into
    /// hi/mid/lo once per group, into shared memory (double-buffered, one barrier a chunk), and multiplied by the 4 warps: a
    /// group's activation traffic is a quarter of the split-k kernel's per row, which bounded 32-token linears by L2
    /// bandwidth (lm_head at 32 tokens re-read ~2 GB of activations for 0.5 GB of weights). <typeparamref name="TChunk"/>
    /// lays the stage out and issues the MMAs: each warp's mma.sync against fragments (<see cref="WarpChunks"/>), or the
    /// group's wgmma reading the stage itself (<see cref="WarpGroupChunks"/>, Hopper); it also sets the group's warps:
    /// <see cref="WideWarpGroupChunks"/> is two warpgroups, 128 rows, whose first four warps load and stage the activations.
    ///
    /// With <paramref name="slices"/> = 8 (<see cref="Kernels.SplitSlices"/>) each group walks one slice only, so a linear
    /// with few row groups still fills the GPU; each slice's sums go to <paramref name="partials"/> and the last of a tile's 8 groups to
    /// arrive (counted in <paramref name="arrivals"/>) adds them in slice order, the same additions as the running total.
    /// </summary>
    static void RowKernel<TOps, TChunk>(ArrayView<F4> x, LinearSegments seg, int tokens, int k, int slices, ArrayView<F4> partials, ArrayView<int> arrivals)
        where TOps : struct, ITensorCoreOps where TChunk : struct, IRowChunk
    {
        // The weights' ring comes first: FirstSharedAddress names the kernel's first shared allocation.
        var ring = SharedMemory.Allocate<U4>(RingDepth * 2 * default(TChunk).Warps * 32); // [slot][row g, row g+8][thread]: each thread's own
        var stage = SharedMemory.Allocate<U4>(2 * 3 * 4 * 32); // [buffer][a chunk's split activations, as TChunk lays them out]
        var arrived = SharedMemory.Allocate<int>(1);
        uint ringAddress = default(TOps).FirstSharedAddress();

        // The slices of one row block are neighbours in the grid, so the groups reading one stretch of each weight row run
        // together (H100, 32 tokens: 1B gate/up 70.0 µs vs 73.2 with the slice as the grid's slowest index, 1B down 45.4 vs 49.6).
        bool sliced = slices > 1;
        int block = Grid.IdxX / slices, tile = Grid.IdxY * (Grid.DimX / slices) + block;
        int bx = Select(seg, block, out var w, out long wAddress, out var y, out int n);

        int warps = default(TChunk).Warps, threads = warps * 32;
        int warp = Warp.WarpIdx, lane = Warp.LaneIdx;
        int g = lane >> 2, t = lane & 3;
        int rowA = (bx * warps + warp) * RowsPerGroup + g, rowB = rowA + 8;
        int tok0 = Grid.IdxY * TokensPerGroup;
        int tiles = (tokens - tok0 + 7) / 8;
        if (tiles > 4) tiles = 4;
        int units = k / 8;
        int chunks = (k + ChunkK - 1) / ChunkK;
        long baseA = (long)rowA * units, baseB = (long)rowB * units;
        bool okA = rowA < n, okB = rowB < n;

        // Thread i stages unit (i & 3) of the chunk for token i >> 2 of the group: the first 128 threads (in a group of
        // two warpgroups, the second only copies and multiplies).
        int i = Group.IdxX;
        bool stages = i < TokensPerGroup * 4;
        int sToken = tok0 + (i >> 2), sUnit = i & 3, sAt = default(TChunk).StageAt(i);
        long sRow = (long)sToken * (units * 2);
        bool sOk = stages && sToken < tokens;

        // The slices this group walks: all, or one alone (its partial sums to the workspace).
        int sFirst = sliced ? Grid.IdxX % slices : 0, sEnd = sliced ? sFirst + 1 : Slices;

        // Chunks in slice order: (s, c) now, (s1, c1) next. Each thread copies its own weights (rows g and g+8, one
        // 16-byte unit each) with cp.async into a ring of RingDepth slots, three chunks ahead of the one it multiplies:
        // more bytes in flight than registers could hold (two chunks ahead in registers bounded 32-token linears to
        // ~0.3 of copy bandwidth), and as the thread reads back only what it copied, no barrier guards the ring.
        // Activations are loaded two chunks ahead and staged one ahead (L2 hits, shared by the group). A slice without
        // chunks (k < 8 chunks) multiplies zeros once: its partial sum is 0.
        int s = sFirst, c = sFirst;
        var (f0, f1) = Activations(x, sRow, sOk, c * 4 + sUnit, units);
        if (stages) default(TChunk).Stage<TOps>(stage, 0, sAt, f0, f1);
        int sIssue = s, cIssue = c, slot = 0;
        for (int r = 0; r < RingDepth - 1; r++)
        {
            CopyWeights<TOps>(ring, r, ringAddress, w, wAddress, baseA, baseB, okA, okB, sIssue < sEnd && cIssue < chunks, cIssue * 4 + t, units);
            Advance(ref sIssue, ref cIssue, chunks);
        }
        // The next chunk's activations are in registers before the loop; each iteration asks for the one after it, so
        // an L2 round trip has a whole chunk to land before its staging needs it.
        int s1 = s, c1 = c;
        Advance(ref s1, ref c1, chunks);
        var (x0, x1) = Activations(x, sRow, s1 < sEnd && c1 < chunks && sOk, c1 * 4 + sUnit, units);
        Group.Barrier();

        float c00 = 0, c01 = 0, c02 = 0, c03 = 0, c10 = 0, c11 = 0, c12 = 0, c13 = 0;
        float c20 = 0, c21 = 0, c22 = 0, c23 = 0, c30 = 0, c31 = 0, c32 = 0, c33 = 0;
        float d00 = 0, d01 = 0, d02 = 0, d03 = 0, d10 = 0, d11 = 0, d12 = 0, d13 = 0;
        float d20 = 0, d21 = 0, d22 = 0, d23 = 0, d30 = 0, d31 = 0, d32 = 0, d33 = 0;
        int buffer = 0;
        bool more = true;
        while (more)
        {
            // The chunks of slice s, then the total takes its sum, as the split-k kernel adds warp s's partial. (One loop
            // over all chunks with the fold inside it: 54 more register moves in the loop, ptxas 11.8's SASS of the
            // mma.sync build, 154 against 100.)
            bool sliceDone = false;
            while (!sliceDone)
            {
                CopyWeights<TOps>(ring, PreviousSlot(slot, RingDepth), ringAddress, w, wAddress, baseA, baseB, okA, okB,
                    sIssue < sEnd && cIssue < chunks, cIssue * 4 + t, units);
                Advance(ref sIssue, ref cIssue, chunks);
                more = s1 < sEnd && c1 < chunks;
                int s2 = s1, c2 = c1;
                Advance(ref s2, ref c2, chunks);
                var (n0, n1) = Activations(x, sRow, more && s2 < sEnd && c2 < chunks && sOk, c2 * 4 + sUnit, units);
                default(TOps).WaitCopies(); // this chunk's copies (three newer groups may still be in flight)
                var a = ring[slot * 2 * threads + i];
                var b = ring[(slot * 2 + 1) * threads + i];
                slot = NextSlot(slot, RingDepth);

                default(TChunk).Multiply<TOps>(a, b, stage, buffer, lane, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                    ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
                sliceDone = s1 != s;
                if (more)
                {
                    // Everyone finished reading the other buffer a chunk ago (the barrier below), so it can take the next chunk.
                    buffer ^= 1;
                    if (stages) default(TChunk).Stage<TOps>(stage, buffer, sAt, x0, x1);
                    (x0, x1) = (n0, n1);
                    Group.Barrier();
                }
                (s, c) = (s1, c1);
                (s1, c1) = (s2, c2);
            }
            d00 += c00; d01 += c01; d02 += c02; d03 += c03; d10 += c10; d11 += c11; d12 += c12; d13 += c13;
            d20 += c20; d21 += c21; d22 += c22; d23 += c23; d30 += c30; d31 += c31; d32 += c32; d33 += c33;
            c00 = c01 = c02 = c03 = c10 = c11 = c12 = c13 = 0;
            c20 = c21 = c22 = c23 = c30 = c31 = c32 = c33 = 0;
        }

        if (sliced && !ArriveLast(partials, arrivals, arrived, tile, sFirst, i,
                ref d00, ref d01, ref d02, ref d03, ref d10, ref d11, ref d12, ref d13,
                ref d20, ref d21, ref d22, ref d23, ref d30, ref d31, ref d32, ref d33))
            return;

        int ta = tok0 + 2 * t, tb = ta + 1;
        StoreTile(y, n, tokens, ta, tb, rowA, rowB, d00, d01, d02, d03);
        StoreTile(y, n, tokens, ta + 8, tb + 8, rowA, rowB, d10, d11, d12, d13);
        StoreTile(y, n, tokens, ta + 16, tb + 16, rowA, rowB, d20, d21, d22, d23);
        StoreTile(y, n, tokens, ta + 24, tb + 24, rowA, rowB, d30, d31, d32, d33);
    }

    /// <summary>
    /// A sliced group's end: its slice's sums go to the workspace; the tile's last slice to arrive adds all eight in slice
    /// order (0 + p0 + p1 + … + p7, as the split-k kernel adds its warps' partials) into d and returns true; the others
    /// return false (they store nothing).
    /// </summary>
    static bool ArriveLast(ArrayView<F4> partials, ArrayView<int> arrivals, ArrayView<int> arrived, int tile, int slice, int i,
        ref float d00, ref float d01, ref float d02, ref float d03, ref float d10, ref float d11, ref float d12, ref float d13,
        ref float d20, ref float d21, ref float d22, ref float d23, ref float d30, ref float d31, ref float d32, ref float d33)
    {
        int threads = Group.DimX;
        long at = ((long)tile * Slices + slice) * 4 * threads + i;
        partials[at] = new F4 { X = d00, Y = d01, Z = d02, W = d03 };
        partials[at + threads] = new F4 { X = d10, Y = d11, Z = d12, W = d13 };
        partials[at + 2 * threads] = new F4 { X = d20, Y = d21, Z = d22, W = d23 };
        partials[at + 3 * threads] = new F4 { X = d30, Y = d31, Z = d32, W = d33 };
        MemoryFence.DeviceLevel(); // each thread's partials are visible before the group counts itself in
        Group.Barrier();
        if (i == 0)
        {
            arrived[0] = Atomic.Add(ref arrivals[tile], 1);
            MemoryFence.DeviceLevel(); // the others' partials, seen through the count, before the group reads them
        }
        Group.Barrier();
        if (arrived[0] != Slices - 1) return false;
        if (i == 0) arrivals[tile] = 0; // ready for the next launch
        d00 = d01 = d02 = d03 = d10 = d11 = d12 = d13 = 0;
        d20 = d21 = d22 = d23 = d30 = d31 = d32 = d33 = 0;
        for (int v = 0; v < Slices; v++)
        {
            long from = ((long)tile * Slices + v) * 4 * threads + i;
            var p0 = partials[from];
            var p1 = partials[from + threads];
            var p2 = partials[from + 2 * threads];
            var p3 = partials[from + 3 * threads];
            d00 += p0.X; d01 += p0.Y; d02 += p0.Z; d03 += p0.W;
            d10 += p1.X; d11 += p1.Y; d12 += p1.Z; d13 += p1.W;
            d20 += p2.X; d21 += p2.Y; d22 += p2.Z; d23 += p2.W;
            d30 += p3.X; d31 += p3.Y; d32 += p3.Z; d33 += p3.W;
        }
        return true;
    }

    /// <summary>
    /// The ring slot after <paramref name="slot"/>, as a select: a `%` here became a full integer division in the loop
    /// (I2F, MUFU.RCP, F2I and a dozen IMADs an iteration, ptxas 11.8).
    /// </summary>
    static int NextSlot(int slot, int depth) => slot + 1 == depth ? 0 : slot + 1;

    /// <summary>The ring slot before <paramref name="slot"/> (the one a chunk's copies go to, depth − 1 ahead).</summary>
    static int PreviousSlot(int slot, int depth) => slot == 0 ? depth - 1 : slot - 1;

    /// <summary>The chunk after (s, c) in slice order: c + 8 in the same slice, else the first chunk of the next slice.</summary>
    static void Advance(ref int s, ref int c, int chunks)
    {
        c += Slices;
        if (c < chunks) return;
        s++;
        c = s;
    }

    /// <summary>
    /// A thread's weights of one chunk — 16-byte unit <paramref name="unit"/> of rows g and g+8, zeros past k or n or past
    /// the last chunk — copied asynchronously into ring slot <paramref name="slot"/>, as one group.
    /// </summary>
    static void CopyWeights<TOps>(ArrayView<U4> ring, int slot, uint ringAddress, ArrayView<U4> w, long wAddress, long baseA, long baseB,
        bool okA, bool okB, bool chunk, int unit, int units) where TOps : struct, ITensorCoreOps
    {
        int threads = Group.DimX, at = slot * 2 * threads + Group.IdxX;
        bool ok = chunk && unit < units;
        default(TOps).CopyAsync(ring, at, ringAddress, w, baseA + unit, wAddress, ok && okA);
        default(TOps).CopyAsync(ring, at + threads, ringAddress, w, baseB + unit, wAddress, ok && okB);
        default(TOps).CommitCopies();
    }
}
