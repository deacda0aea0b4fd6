using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>The shrink and expand kernels of <see cref="LoraOps"/> and the arithmetic they share.</summary>
public partial class LoraOps
{
    // ---- Shrink: buffer[t, r] = A[s, r, :] · x[t, :], s = slot[t]; s = −1 (or out of range): buffer[t, :] = 0.
    // One group of 256 threads per (member, token, block of four rank rows). Thread i takes the input units i, i + 256, …
    // (a unit: 8 inputs, one 16-byte load of A per row on the wide path; one input on the scalar path) and keeps the four
    // rows' sums; then warp butterflies, and the eight warps' sums added in warp order — an order fixed by (in, rank).

    /// <summary>The shrink kernels (BF16 with 16-byte loads, F32, BF16, F16) with the device's warps.</summary>
    static (Action<AcceleratorStream, KernelConfig, ArrayView<F4>, ArrayView<int>, LoraSegments<ShrinkSegment<U4>>, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<float>>, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<ushort>>, int>,
        Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<ushort>>, int>) LoadShrinks<TLanes>(ComputeDevice device)
        where TLanes : struct, ILanes
    {
        var acc = device.Accelerator;
        return (
            device.Serialized(acc.LoadKernel<ArrayView<F4>, ArrayView<int>, LoraSegments<ShrinkSegment<U4>>, int>(ShrinkBf16x8Kernel<TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<float>>, int>(ShrinkKernel<float, F32Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<ushort>>, int>(ShrinkKernel<ushort, Bf16Decoder, TLanes>)),
            device.Serialized(acc.LoadKernel<ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<ushort>>, int>(ShrinkKernel<ushort, F16Decoder, TLanes>)));
    }

    static void ShrinkBf16x8Kernel<TLanes>(ArrayView<F4> x, ArrayView<int> slots, LoraSegments<ShrinkSegment<U4>> segments, int units)
        where TLanes : struct, ILanes
    {
        var partial = SharedMemory.Allocate<float>(ShrinkWarps * RowsPerGroup);
        if (!ShrinkItem(segments, slots, out var s, out int t, out int r0, out int rows, out int slot, out long outRow)) return;
        // Rows past the rank read the last row again (every load unconditional, so all are in flight at once) and are dropped.
        long a0 = ((long)slot * s.Rank + r0) * units;
        long a1 = a0 + XMath.Min(1, rows - 1) * units, a2 = a0 + XMath.Min(2, rows - 1) * units, a3 = a0 + (rows - 1) * units;
        long xRow = (long)t * units * 2;
        float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        for (int u = Group.IdxX; u < units; u += 2 * ShrinkThreads)
        {
            // Two units per pass, all twelve loads issued before the first product; sums still in unit order.
            int v = u + ShrinkThreads;
            bool second = v < units;
            if (!second) v = u;
            F4 xu0 = x[xRow + 2 * u], xu1 = x[xRow + 2 * u + 1], xv0 = x[xRow + 2 * v], xv1 = x[xRow + 2 * v + 1];
            U4 au0 = s.A[a0 + u], au1 = s.A[a1 + u], au2 = s.A[a2 + u], au3 = s.A[a3 + u];
            U4 av0 = s.A[a0 + v], av1 = s.A[a1 + v], av2 = s.A[a2 + v], av3 = s.A[a3 + v];
            d0 += Dot8(au0, xu0, xu1);
            d1 += Dot8(au1, xu0, xu1);
            d2 += Dot8(au2, xu0, xu1);
            d3 += Dot8(au3, xu0, xu1);
            if (!second) continue;
            d0 += Dot8(av0, xv0, xv1);
            d1 += Dot8(av1, xv0, xv1);
            d2 += Dot8(av2, xv0, xv1);
            d3 += Dot8(av3, xv0, xv1);
        }
        ReduceRows<TLanes>(partial, s.Buffer, outRow, rows, d0, d1, d2, d3);
    }

    static void ShrinkKernel<TW, TDec, TLanes>(ArrayView<float> x, ArrayView<int> slots, LoraSegments<ShrinkSegment<TW>> segments, int inF)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW> where TLanes : struct, ILanes
    {
        var partial = SharedMemory.Allocate<float>(ShrinkWarps * RowsPerGroup);
        if (!ShrinkItem(segments, slots, out var s, out int t, out int r0, out int rows, out int slot, out long outRow)) return;
        TDec dec = default;
        long a0 = ((long)slot * s.Rank + r0) * inF;
        long a1 = a0 + XMath.Min(1, rows - 1) * inF, a2 = a0 + XMath.Min(2, rows - 1) * inF, a3 = a0 + (rows - 1) * inF;
        long xRow = (long)t * inF;
        float d0 = 0, d1 = 0, d2 = 0, d3 = 0;
        for (int i = Group.IdxX; i < inF; i += ShrinkThreads)
        {
            float xi = x[xRow + i];
            float w0 = dec.Decode(s.A[a0 + i]), w1 = dec.Decode(s.A[a1 + i]), w2 = dec.Decode(s.A[a2 + i]), w3 = dec.Decode(s.A[a3 + i]);
            d0 += w0 * xi;
            d1 += w1 * xi;
            d2 += w2 * xi;
            d3 += w3 * xi;
        }
        ReduceRows<TLanes>(partial, s.Buffer, outRow, rows, d0, d1, d2, d3);
    }

    /// <summary>
    /// The group's work item: its member <paramref name="s"/>, token, first rank row, rows (≤ four) and slot; false for a
    /// token without an adapter (slot −1 or out of range), whose rows the group has then zeroed.
    /// </summary>
    static bool ShrinkItem<TW>(LoraSegments<ShrinkSegment<TW>> segments, ArrayView<int> slots, out ShrinkSegment<TW> s, out int t, out int r0,
        out int rows, out int slot, out long outRow) where TW : unmanaged
    {
        s = Select(segments, Grid.IdxX, out int local);
        t = local / s.Blocks;
        r0 = local % s.Blocks * RowsPerGroup;
        rows = XMath.Min(RowsPerGroup, s.Rank - r0);
        slot = slots[t];
        outRow = (long)t * s.Rank + r0;
        if (slot >= 0 && slot < s.Slots) return true;
        if (Group.IdxX < rows) s.Buffer[outRow + Group.IdxX] = 0;
        return false;
    }

    /// <summary>buffer[outRow + j] = Σ over the group's threads of d_j, j &lt; rows: warp butterflies, then the warps in order.</summary>
    static void ReduceRows<TLanes>(ArrayView<float> partial, ArrayView<float> buffer, long outRow, int rows, float d0, float d1, float d2, float d3)
        where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        // The four butterflies side by side (MatMulOps.WarpSum's order, offsets 16, 8, …, 1): four shuffles in flight per step.
        for (int offset = 16; offset > 0; offset >>= 1)
        {
            d0 += lanes.Xor(d0, offset);
            d1 += lanes.Xor(d1, offset);
            d2 += lanes.Xor(d2, offset);
            d3 += lanes.Xor(d3, offset);
        }
        if (lanes.Lane == 0)
        {
            int p = lanes.WarpIdx * RowsPerGroup;
            partial[p] = d0;
            partial[p + 1] = d1;
            partial[p + 2] = d2;
            partial[p + 3] = d3;
        }
        Group.Barrier();
        int j = Group.IdxX;
        if (j >= rows) return;
        float total = 0;
        for (int w = 0; w < ShrinkWarps; w++) total += partial[w * RowsPerGroup + j];
        buffer[outRow + j] = total;
    }

    // ---- Expand: y[t, off + o] += B[s, o, :] · buffer[t, :], s = slot[t]; s = −1 (or out of range): skip. A stacked shrink
    // holds every slot's values for each token: the token's are read at its slot's columns.
    // One thread per (member, output, run of tokensPerItem tokens): a warp's threads take consecutive outputs of the same
    // tokens, and a thread's B row is read again (from L1) for each token of its run, not once per token from L2 — a
    // prefill's thousands of tokens share a few slots. Each (token, output) sums its rank in order r = 0, 1, … whatever the
    // run: the run length moves no bits. The wide path reads B's row and the token's buffer row in 16-byte units (8 ranks),
    // two units per pass.

    static void ExpandBf16x8Kernel(Index1D i, ArrayView<int> slots, LoraSegments<ExpandSegment<U4, F4>> segments, int tokensPerItem)
    {
        var s = Select(segments, i, out int local);
        int o = local % s.Out, first = local / s.Out * tokensPerItem, end = Math.Min(first + tokensPerItem, s.Tokens);
        for (int t = first; t < end; t++)
        {
            int slot = slots[t];
            if (slot < 0 || slot >= s.Slots) continue;
            long yi = (long)t * s.YStride + s.YOffset + o;
            s.Y[yi] += ExpandSum(s, slot, t, o);
        }
    }

    /// <summary>
    /// Σ_r B[slot, o, r] · U[t, UBase + slot · USlot + r] in the wide expand's order (16-byte units, two a pass): the one
    /// sum of the wide expand kernel and of the kernels that add an expand as they read its output (<see cref="PendingExpand"/>).
    /// </summary>
    internal static float ExpandSum(ExpandSegment<U4, F4> s, int slot, int t, int o)
    {
        int units = s.Rank / 8;
        long bRow = ((long)slot * s.Out + o) * units, uRow = ((long)t * s.UStride + s.UBase + slot * s.USlot) >> 2; // F4 units
        float sum = 0;
        for (int u = 0; u < units; u += 2)
        {
            int v = u + 1;
            bool second = v < units;
            if (!second) v = u;
            U4 bu = s.B[bRow + u], bv = s.B[bRow + v];
            F4 pu0 = s.U[uRow + 2 * u], pu1 = s.U[uRow + 2 * u + 1], pv0 = s.U[uRow + 2 * v], pv1 = s.U[uRow + 2 * v + 1];
            sum += Dot8(bu, pu0, pu1);
            if (second) sum += Dot8(bv, pv0, pv1);
        }
        return sum;
    }

    /// <summary>Token <paramref name="t"/>'s slot where the expand has it, else −1 (no delta).</summary>
    internal static int ExpandSlot(ArrayView<int> slots, ExpandSegment<U4, F4> s, int t)
    {
        int slot = slots[t];
        return slot >= 0 && slot < s.Slots ? slot : -1;
    }

    static void ExpandKernel<TW, TDec>(Index1D i, ArrayView<int> slots, LoraSegments<ExpandSegment<TW, float>> segments, int tokensPerItem)
        where TW : unmanaged where TDec : struct, IWeightDecoder<TW>
    {
        var s = Select(segments, i, out int local);
        int o = local % s.Out, first = local / s.Out * tokensPerItem, end = Math.Min(first + tokensPerItem, s.Tokens);
        TDec dec = default;
        for (int t = first; t < end; t++)
        {
            int slot = slots[t];
            if (slot < 0 || slot >= s.Slots) continue;
            long bRow = ((long)slot * s.Out + o) * s.Rank, uRow = (long)t * s.UStride + s.UBase + slot * s.USlot;
            float sum = 0;
            int r = 0;
            for (; r + 4 <= s.Rank; r += 4) // four independent loads in flight
                sum += dec.Decode(s.B[bRow + r]) * s.U[uRow + r] + dec.Decode(s.B[bRow + r + 1]) * s.U[uRow + r + 1]
                     + dec.Decode(s.B[bRow + r + 2]) * s.U[uRow + r + 2] + dec.Decode(s.B[bRow + r + 3]) * s.U[uRow + r + 3];
            for (; r < s.Rank; r++) sum += dec.Decode(s.B[bRow + r]) * s.U[uRow + r];
            long yi = (long)t * s.YStride + s.YOffset + o;
            s.Y[yi] += sum;
        }
    }

    /// <summary>Σ_j w[j] · x[j] over one unit: eight BF16 weights (low half of each uint first) and eight F32 inputs.</summary>
    static float Dot8(U4 w, F4 lo, F4 hi) =>
        (Low(w.X) * lo.X + High(w.X) * lo.Y) + (Low(w.Y) * lo.Z + High(w.Y) * lo.W)
        + ((Low(w.Z) * hi.X + High(w.Z) * hi.Y) + (Low(w.W) * hi.Z + High(w.W) * hi.W));

    static float Low(uint pair) => Interop.IntAsFloat(pair << 16);

    static float High(uint pair) => Interop.IntAsFloat(pair & 0xFFFF0000u);

    /// <summary>The member that work item <paramref name="index"/> belongs to, and the item's index within it.</summary>
    static T Select<T>(LoraSegments<T> segments, int index, out int local) where T : struct
    {
        if (index >= segments.End1)
        {
            local = index - segments.End1;
            return segments.S2;
        }
        if (index >= segments.End0)
        {
            local = index - segments.End0;
            return segments.S1;
        }
        local = index;
        return segments.S0;
    }
}
