using ILGPU;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

// The fragment arithmetic the tensor-core kernels share: the activation loads, the hi/mid/lo split, the six MMAs of a
// tile-chunk, the stores.
internal sealed partial class TensorCoreLinear
{
    /// <summary>A thread's 8 activations of one chunk unit (zeros past the tokens or k).</summary>
    static (F4, F4) Activations(ArrayView<F4> x, long xRow, bool ok, int unit, int units)
    {
        F4 x0 = default, x1 = default;
        if (ok && unit < units)
        {
            x0 = x[xRow + unit * 2];
            x1 = x[xRow + unit * 2 + 1];
        }
        return (x0, x1);
    }

    static void StoreTile(ArrayView<float> y, int n, int tokens, int ta, int tb, int rowA, int rowB, float d0, float d1, float d2, float d3)
    {
        Store(y, n, tokens, ta, rowA, d0);
        Store(y, n, tokens, tb, rowA, d1);
        Store(y, n, tokens, ta, rowB, d2);
        Store(y, n, tokens, tb, rowB, d3);
    }

    /// <summary>
    /// The six MMAs of a chunk for one tile from split activations (x: k 0..3 of the lane's 8, the first k16 half; z, w:
    /// k 4..7, the second): hi, mid, lo against the first half of rows g and g+8, then against the second.
    /// </summary>
    static void MmaSplit<TOps>(U4 a, U4 b, U4 hi, U4 mid, U4 lo, ref float d0, ref float d1, ref float d2, ref float d3) where TOps : struct, ITensorCoreOps
    {
        // Fragment registers: a0 = row g, a1 = row g+8, a2 = row g (next pair), a3 = row g+8 (next pair).
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, hi.X, hi.Y);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, mid.X, mid.Y);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.X, b.X, a.Y, b.Y, lo.X, lo.Y);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, hi.Z, hi.W);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, mid.Z, mid.W);
        default(TOps).Mma(ref d0, ref d1, ref d2, ref d3, a.Z, b.Z, a.W, b.W, lo.Z, lo.W);
    }

    /// <summary>
    /// Where thread <paramref name="i"/>'s unit (token i / 4, unit i % 4) goes in a fragment stage: tile i / 32, lane
    /// ((i / 4) % 8) · 4 + i % 4, the lane that holds it in the split-k kernel.
    /// </summary>
    static int FragmentIndex(int i) => (i >> 5) * 32 + ((i >> 2) & 7) * 4 + (i & 3);

    /// <summary>A thread's 8 activations split and staged as fragments: hi at <paramref name="at"/>, mid and lo one and two <paramref name="partStride"/> further.</summary>
    static void StageFragments<TOps>(ArrayView<U4> stage, int at, int partStride, F4 x0, F4 x1) where TOps : struct, ITensorCoreOps
    {
        SplitUnit<TOps>(x0, x1, out var hi, out var mid, out var lo);
        stage[at] = hi;
        stage[at + partStride] = mid;
        stage[at + 2 * partStride] = lo;
    }

    /// <summary>A lane's 8 activations (one 16-byte unit of k) as hi, mid and lo BF16 fragments.</summary>
    static void SplitUnit<TOps>(F4 x0, F4 x1, out U4 hi, out U4 mid, out U4 lo) where TOps : struct, ITensorCoreOps
    {
        Split<TOps>(x0.X, x0.Y, out hi.X, out mid.X, out lo.X);
        Split<TOps>(x0.Z, x0.W, out hi.Y, out mid.Y, out lo.Y);
        Split<TOps>(x1.X, x1.Y, out hi.Z, out mid.Z, out lo.Z);
        Split<TOps>(x1.Z, x1.W, out hi.W, out mid.W, out lo.W);
    }

    /// <summary>Two F32 values as packed BF16 pairs (low half first): hi = bf16(v), mid = bf16(v − hi), lo = bf16(v − hi − mid).</summary>
    static void Split<TOps>(float v0, float v1, out uint hi, out uint mid, out uint lo) where TOps : struct, ITensorCoreOps
    {
        hi = default(TOps).PackBf16(v0, v1);
        float r0 = v0 - Interop.IntAsFloat(hi << 16), r1 = v1 - Interop.IntAsFloat(hi & 0xFFFF0000u);
        mid = default(TOps).PackBf16(r0, r1);
        lo = default(TOps).PackBf16(r0 - Interop.IntAsFloat(mid << 16), r1 - Interop.IntAsFloat(mid & 0xFFFF0000u));
    }

    static void Store(ArrayView<float> y, int n, int tokens, int token, int row, float v)
    {
        if (token < tokens && row < n) y[(long)token * n + row] = v;
    }
}
