using ILGPU;

namespace LoraEngine.Tensors.Kernels;

// How the row kernel's group stages a chunk's split activations and multiplies them: each warp's mma.sync against
// fragments it loads from the stage, or (Hopper) the warpgroup's wgmma reading the stage itself.
internal sealed partial class TensorCoreLinear
{
    /// <summary>
    /// The row kernel's chunk arithmetic: where thread i's token unit goes in the stage (768 U4 a buffer pair), how it is
    /// written, and the 6 MMAs per token tile of a chunk, in <see cref="MmaSplit{TOps}"/>'s order, into c (4 tiles × D).
    /// </summary>
    internal interface IRowChunk
    {
        /// <summary>The group's warps: 4 (one warpgroup, 64 rows), or 8 (two warpgroups sharing one stage, 128 rows).</summary>
        int Warps { get; }

        /// <summary>Where thread <paramref name="i"/> (token i / 4, unit i % 4 of the chunk) writes its activations.</summary>
        int StageAt(int i);

        /// <summary>Writes a thread's 8 activations, split into hi, mid and lo, into <paramref name="buffer"/>.</summary>
        void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps;

        /// <summary>The chunk's MMAs for this warp's rows (a, b: rows g and g+8) against the staged tokens of <paramref name="buffer"/>.</summary>
        void Multiply<TOps>(U4 a, U4 b, ArrayView<U4> stage, int buffer, int lane, int tiles,
            ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
            ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
            where TOps : struct, ITensorCoreOps;
    }

    /// <summary>
    /// Each warp's 24 mma.sync a chunk; the stage holds fragments, [buffer][hi, mid, lo][tile][lane]: thread i's unit
    /// becomes tile i / 32, lane ((i / 4) % 8) · 4 + i % 4, the lane that holds it in the split-k kernel.
    /// </summary>
    internal readonly struct WarpChunks : IRowChunk
    {
        public int Warps => 4;

        public int StageAt(int i) => FragmentIndex(i);

        public void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps =>
            StageFragments<TOps>(stage, buffer * 3 * 128 + sAt, 128, x0, x1);

        public void Multiply<TOps>(U4 a, U4 b, ArrayView<U4> stage, int buffer, int lane, int tiles,
            ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
            ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
            where TOps : struct, ITensorCoreOps
        {
            int at = buffer * 3 * 128 + lane;
            MmaSplit<TOps>(a, b, stage[at], stage[at + 128], stage[at + 256], ref c00, ref c01, ref c02, ref c03);
            if (tiles > 1) MmaSplit<TOps>(a, b, stage[at + 32], stage[at + 160], stage[at + 288], ref c10, ref c11, ref c12, ref c13);
            if (tiles > 2) MmaSplit<TOps>(a, b, stage[at + 64], stage[at + 192], stage[at + 320], ref c20, ref c21, ref c22, ref c23);
            if (tiles > 3) MmaSplit<TOps>(a, b, stage[at + 96], stage[at + 224], stage[at + 352], ref c30, ref c31, ref c32, ref c33);
        }
    }

    /// <summary>
    /// The group's six chained wgmma m64n32k16 a chunk (<see cref="ITensorCoreOps.WarpGroupChunk"/>, sm_90a): the same
    /// products in the same order per output, so the same bits (wgmma chains equal mma.sync chains bit for bit, H100),
    /// with no fragment loads — the tensor cores read the stage, laid out as wgmma's B: per buffer six 1 KB blocks (2 ·
    /// part + k16 half) of K-major core matrices without swizzle (<see cref="StageIndex"/>). All four token tiles are
    /// multiplied; tokens past the last are zeros and never stored.
    /// </summary>
    internal readonly struct WarpGroupChunks : IRowChunk
    {
        public int Warps => 4;

        public int StageAt(int i) => StageIndex(i >> 2, i & 3);

        public void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps =>
            StageCoreMatrices<TOps>(stage.Cast<uint>(), buffer * 1536 + sAt, 256, x0, x1);

        public void Multiply<TOps>(U4 a, U4 b, ArrayView<U4> stage, int buffer, int lane, int tiles,
            ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
            ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
            where TOps : struct, ITensorCoreOps =>
            default(TOps).WarpGroupChunk(ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33, a, b, stage.Cast<uint>(), buffer * 1536, default(TOps).SecondSharedAddress());
    }

    /// <summary>
    /// The uint index, within a 1 KB block of the wgmma stage (2 KB for the tile kernel's 64 tokens), of k pair <c>kp</c>
    /// (k 2·kp, 2·kp + 1 of the MMA's 16) of token n: 8-token groups 256 bytes apart, the two 8-wide k halves 128 bytes
    /// apart, a token's 8 k values 16 bytes.
    /// </summary>
    static int StageIndex(int n, int kp) => (n >> 3) * 64 + (kp >> 2) * 32 + (n & 7) * 4 + (kp & 3);

    /// <summary>
    /// A thread's 8 activations split into hi, mid and lo and written where wgmma's B reads them (<paramref name="at"/>:
    /// its word in block 0; blocks of <paramref name="blockWords"/>, 2 · part + k16 half). Unit t holds physical k 8t …
    /// 8t+7 of the chunk; as in the split-k kernel's lane t, pairs (8t, 8t+1) and (8t+2, 8t+3) are k pairs t and t + 4
    /// (128 bytes on) of the first MMA, (8t+4, 8t+5) and (8t+6, 8t+7) of the second (the next block). Then the fence that
    /// lets the tensor cores see the writes.
    /// </summary>
    static void StageCoreMatrices<TOps>(ArrayView<uint> words, int at, int blockWords, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps
    {
        SplitUnit<TOps>(x0, x1, out var hi, out var mid, out var lo);
        CoreMatrixPart(words, at, blockWords, hi);
        CoreMatrixPart(words, at + 2 * blockWords, blockWords, mid);
        CoreMatrixPart(words, at + 4 * blockWords, blockWords, lo);
        default(TOps).FenceProxyAsync();
    }

    /// <summary>One part's four words: k pairs t and t + 4 of both k16 halves.</summary>
    static void CoreMatrixPart(ArrayView<uint> words, int at, int blockWords, U4 u)
    {
        words[at] = u.X;
        words[at + 32] = u.Y;
        words[at + blockWords] = u.Z;
        words[at + blockWords + 32] = u.W;
    }

    /// <summary>
    /// <see cref="WarpGroupChunks"/> for a group of two warpgroups (8 warps, 128 rows) sharing one stage: a chunk's
    /// activations are loaded and split once for twice the rows (the 64-row group spent about as many instructions on
    /// them as on its weights), and each warpgroup issues its own six wgmma against the same stage.
    /// </summary>
    internal readonly struct WideWarpGroupChunks : IRowChunk
    {
        public int Warps => 8;

        public int StageAt(int i) => default(WarpGroupChunks).StageAt(i);

        public void Stage<TOps>(ArrayView<U4> stage, int buffer, int sAt, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps =>
            default(WarpGroupChunks).Stage<TOps>(stage, buffer, sAt, x0, x1);

        public void Multiply<TOps>(U4 a, U4 b, ArrayView<U4> stage, int buffer, int lane, int tiles,
            ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
            ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33)
            where TOps : struct, ITensorCoreOps =>
            default(WarpGroupChunks).Multiply<TOps>(a, b, stage, buffer, lane, tiles, ref c00, ref c01, ref c02, ref c03, ref c10, ref c11, ref c12, ref c13,
                ref c20, ref c21, ref c22, ref c23, ref c30, ref c31, ref c32, ref c33);
    }
}
