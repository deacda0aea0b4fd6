using ILGPU;

namespace LoraEngine.Tensors.Kernels;

// How the tile kernel's group stages a chunk's split activations and multiplies them: each warp's mma.sync against
// fragments it loads from the stage, or (Hopper) each warpgroup's wgmma reading the stage itself.
internal sealed partial class TensorCoreLinear
{
    /// <summary>
    /// The tile kernel's chunk arithmetic (8 warps, 128 rows × 64 tokens a group): where thread i's token unit goes in the
    /// stage (1536 U4 a buffer pair), how it is written, which weights of the ring a warp multiplies, and where its eight
    /// accumulators (four floats of an MMA's D each: rows g and g+8, tokens 2t and 2t+1) sit in the group's tile.
    /// </summary>
    internal interface ITileChunk
    {
        /// <summary>Where thread <paramref name="i"/> (token i / 4, unit i % 4 of the chunk) writes its activations.</summary>
        int StageAt(int i);

        /// <summary>Writes a thread's 8 activations, split into hi, mid and lo, into <paramref name="buffer"/>.</summary>
        void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps;

        /// <summary>The chunk's MMAs for warp <paramref name="warp"/>: its weights from ring stage <paramref name="slot"/>, its tokens from <paramref name="buffer"/>.</summary>
        void Multiply<TOps>(ArrayView<U4> ring, int slot, ArrayView<U4> stage, int buffer, int warp, int lane,
            ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7) where TOps : struct, ITensorCoreOps;

        /// <summary>The first row and token of warp <paramref name="warp"/>'s tile within the group's.</summary>
        (int Row, int Token) Origin(int warp);

        /// <summary>Accumulator <paramref name="j"/>'s rows and tokens past the warp's first.</summary>
        (int Row, int Token) Offset(int j);
    }

    /// <summary>
    /// Warps 4 along rows × 2 along tokens, each 32 rows (two 16-row tiles) × 32 tokens (four 8-token tiles): 48
    /// mma.sync a chunk from 4 + 12 shared loads. The stage holds fragments, [buffer][hi, mid, lo][tile][lane]: thread i's
    /// unit becomes tile i / 32, lane ((i / 4) % 8) · 4 + i % 4, as in the row kernel.
    /// </summary>
    internal readonly struct WarpTileChunks : ITileChunk
    {
        public int StageAt(int i) => FragmentIndex(i);

        public void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps =>
            StageFragments<TOps>(stage, buffer * 3 * 256 + sAt, 256, x0, x1);

        public void Multiply<TOps>(ArrayView<U4> ring, int slot, ArrayView<U4> stage, int buffer, int warp, int lane,
            ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7) where TOps : struct, ITensorCoreOps
        {
            int wr = warp & 3, wt = warp >> 2;
            int wb = slot * TileRows * 4 + (wr * 32 + (lane >> 2)) * 4 + (lane & 3);
            int xb = buffer * 3 * 256 + wt * 4 * 32 + lane;
            U4 a0 = ring[wb], b0 = ring[wb + 32], a1 = ring[wb + 64], b1 = ring[wb + 96];
            TileMmas<TOps>(a0, b0, a1, b1, stage, xb, ref c0, ref c4);
            TileMmas<TOps>(a0, b0, a1, b1, stage, xb + 32, ref c1, ref c5);
            TileMmas<TOps>(a0, b0, a1, b1, stage, xb + 64, ref c2, ref c6);
            TileMmas<TOps>(a0, b0, a1, b1, stage, xb + 96, ref c3, ref c7);
        }

        public (int Row, int Token) Origin(int warp) => ((warp & 3) * 32, (warp >> 2) * 32);

        public (int Row, int Token) Offset(int j) => ((j >> 2) * 16, (j & 3) * 8);
    }

    /// <summary>
    /// Warpgroup j (warps 4j … 4j+3) owns rows 64j … 64j+63 and all 64 tokens, its warp w rows 16w … 16w+15: six chained
    /// wgmma m64n64k16 a chunk (<see cref="ITensorCoreOps.WarpGroupTileChunk"/>, sm_90a) with A from registers (2 shared
    /// loads), B read by the tensor cores from the stage: per buffer six 2 KB blocks (2 · part + half), each eight 8-token
    /// groups of K-major core matrices without swizzle (<see cref="StageIndex"/>, as the row kernel's 32 tokens).
    /// </summary>
    internal readonly struct WarpGroupTileChunks : ITileChunk
    {
        const int BufferWords = 3 * 2 * 512; // [hi, mid, lo][k16 half] blocks of 2 KB

        public int StageAt(int i) => StageIndex(i >> 2, i & 3);

        public void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps =>
            StageCoreMatrices<TOps>(stage.Cast<uint>(), buffer * BufferWords + sAt, 512, x0, x1);

        public void Multiply<TOps>(ArrayView<U4> ring, int slot, ArrayView<U4> stage, int buffer, int warp, int lane,
            ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7) where TOps : struct, ITensorCoreOps
        {
            int wb = slot * TileRows * 4 + (warp * 16 + (lane >> 2)) * 4 + (lane & 3);
            default(TOps).WarpGroupTileChunk(ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7,
                ring[wb], ring[wb + 32], stage.Cast<uint>(), buffer * BufferWords, default(TOps).SecondSharedAddress());
        }

        public (int Row, int Token) Origin(int warp) => (warp * 16, 0);

        public (int Row, int Token) Offset(int j) => (0, j * 8);
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
}
