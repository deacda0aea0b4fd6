using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's LoRA shrink and expand (same semantics as LoraOps' kernels). Tokens are grouped by slot (a counting
/// sort into per-thread scratch, nothing allocated per call), so each slot's A and B are read once per call:
/// shrink is <see cref="HostGemm"/> over the slot's gathered tokens, expand transposes 16 rows of B at a time in
/// registers and adds rank broadcast multiply-adds to each token's 16 outputs.
/// </summary>
internal sealed unsafe class HostLora(ComputeDevice device) : LoraOps(device)
{
    /// <summary>Each member's shrink in turn (<see cref="ShrinkOne"/>): the host gains nothing from one call for several.</summary>
    private protected override void ShrinkCore(DeviceTensor x, DeviceTensor tokenSlots, ReadOnlySpan<(DeviceTensor Buffer, DeviceTensor A)> outputs, ReadOnlySpan<LoraShape> shapes)
    {
        for (int i = 0; i < outputs.Length; i++) ShrinkOne(outputs[i].Buffer, x, outputs[i].A, tokenSlots, shapes[i]);
    }

    /// <summary>Each member's expand in turn (<see cref="ExpandOne"/>).</summary>
    private protected override void ExpandCore(DeviceTensor tokenSlots, ReadOnlySpan<(DeviceTensor Y, DeviceTensor Buffer, DeviceTensor B)> outputs, ReadOnlySpan<LoraShape> shapes)
    {
        for (int i = 0; i < outputs.Length; i++) ExpandOne(outputs[i].Y, outputs[i].Buffer, outputs[i].B, tokenSlots, shapes[i]);
    }

    /// <summary>Never: the host adds a pending expand before the op that reads its output (the kernels' fusion saves launches, which the host has none of).</summary>
    internal override bool TryFusedView(DeviceTensor y, PendingExpand expand, out ExpandSegment<U4, F4> view)
    {
        view = default;
        return false;
    }

    /// <summary>buffer[t, r] = A[slot[t], r, :] · x[t, :]; zero rows for tokens without a slot.</summary>
    static void ShrinkOne(DeviceTensor bufferT, DeviceTensor xt, DeviceTensor a, DeviceTensor tokenSlots, LoraShape shape)
    {
        Span<float> buffer = bufferT.HostSpan<float>(), x = xt.HostSpan<float>();
        Span<int> slots = tokenSlots.HostSpan<int>();
        int numSlots = shape.Slots, rank = shape.Rank, inF = shape.In;
        buffer.Clear();
        if (!HostGemm.IsSupported)
        {
            ShrinkPortable(buffer, x, a, slots, numSlots, rank, inF);
            return;
        }
        var groups = SlotGroups.Build(slots, numSlots);
        byte* ap = HostMemory.Pointer(a);
        int size = a.DType.Size();
        fixed (float* bp = buffer, xp = x)
        fixed (int* order = groups.Order)
        {
            for (int s = 0; s < numSlots; s++)
            {
                int start = groups.Start[s], count = groups.Start[s + 1] - start;
                if (count == 0) continue;
                byte* slotA = ap + (long)s * rank * inF * size;
                HostGemm.Linear(bp, rank, xp, inF, order + start, count, slotA, a.DType, inF, rank, inF, accumulate: false);
            }
        }
    }

    /// <summary>y[t, off + o] += B[slot[t], o, :] · buffer[t, :]; tokens without a slot are untouched.</summary>
    static void ExpandOne(DeviceTensor yt, DeviceTensor bufferT, DeviceTensor b, DeviceTensor tokenSlots, LoraShape shape)
    {
        Span<float> y = yt.HostSpan<float>(), buffer = bufferT.HostSpan<float>();
        Span<int> slots = tokenSlots.HostSpan<int>();
        int numSlots = shape.Slots, rank = shape.Rank, outF = shape.Out;
        if (!HostGemm.IsSupported)
        {
            ExpandPortable(y, buffer, b, slots, shape);
            return;
        }
        var groups = SlotGroups.Build(slots, numSlots);
        int tokens = groups.Start[numSlots];
        if (tokens == 0) return;
        fixed (float* yp = y, bp = buffer)
        fixed (int* order = groups.Order, start = groups.Start)
        {
            var job = ExpandJob.ForThisThread;
            job.Y = yp;
            job.Buffer = bp;
            job.B = HostMemory.Pointer(b);
            job.Type = b.DType;
            job.Order = order;
            job.Start = start;
            job.Slots = numSlots;
            job.Rank = rank;
            job.OutF = outF;
            job.YStride = shape.YStride;
            job.YOffset = shape.YOffset;
            (job.UStride, job.UBase, job.USlot) = (shape.UStride, shape.UBase, shape.USlot);
            int items = (outF + ExpandJob.BlockOutputs * ExpandJob.BlocksPerItem - 1) / (ExpandJob.BlockOutputs * ExpandJob.BlocksPerItem);
            if ((long)outF * rank * tokens < 1 << 16) for (int i = 0; i < items; i++) job.Run(i);
            else HostParallel.For(items, job);
        }
    }

    /// <summary>
    /// One block of 16 outputs for every slot's tokens: B[s, o0..o0+16, :] is transposed 16 ranks at a time (so column r
    /// of the block is one vector), then each of the slot's tokens takes rank FMAs in order r = 0, 1, …:
    /// y[t, o0..o0+16] = fma(Bᵀ[r], buffer[t, r], y[t, o0..o0+16]). Outputs past the last full block take the same FMAs
    /// one at a time.
    /// </summary>
    sealed class ExpandJob : HostJob
    {
        public const int BlockOutputs = 16;
        public const int BlocksPerItem = 8;

        [ThreadStatic] static ExpandJob? t_job;

        public static ExpandJob ForThisThread => t_job ??= new ExpandJob();

        public float* Y, Buffer;
        public byte* B;
        public int* Order, Start;
        public int Slots, Rank, OutF;
        public int YStride, YOffset; // y's row width and the first column written
        public int UStride, UBase, USlot; // where token t's slot s rank values begin in Buffer: t · UStride + UBase + s · USlot
        public DType Type;

        /// <summary>Work item: BlocksPerItem blocks of 16 outputs (one block is too little work to hand to another core).</summary>
        [SkipLocalsInit]
        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        public override void Run(int item)
        {
            int size = Type == DType.F32 ? 4 : 2;
            int chunks = (Rank + 15) / 16;
            var columns = stackalloc Vector512<float>[chunks * 16]; // columns[r] = B[s, o0..o0+16, r]
            var rows = stackalloc Vector512<float>[16];
            for (int o0 = item * BlocksPerItem * BlockOutputs; o0 < Math.Min(OutF, (item + 1) * BlocksPerItem * BlockOutputs); o0 += BlockOutputs)
                for (int s = 0; s < Slots; s++)
                {
                    int first = Start[s], count = Start[s + 1] - first;
                    if (count == 0) continue;
                    byte* slotB = B + (long)s * OutF * Rank * size;
                    if (o0 + BlockOutputs > OutF)
                    {
                        RunScalar(slotB, s, o0, first, count);
                        continue;
                    }
                    for (int c = 0; c < chunks; c++)
                    {
                        int r0 = c * 16, n = Math.Min(16, Rank - r0);
                        byte* row0 = slotB + ((long)o0 * Rank + r0) * size;
                        long rowBytes = (long)Rank * size;
                        if (n == 16 && Type == DType.BF16)
                            for (int i = 0; i < 16; i++) rows[i] = HostGemm.WidenBf16((ushort*)(row0 + i * rowBytes));
                        else if (n == 16 && Type == DType.F32)
                            for (int i = 0; i < 16; i++) rows[i] = Vector512.Load((float*)(row0 + i * rowBytes));
                        else
                            for (int i = 0; i < 16; i++) rows[i] = PartialRow(row0 + i * rowBytes, n);
                        HostTranspose.Transpose16(rows, columns + r0);
                    }
                    for (int i = first; i < first + count; i++)
                    {
                        int t = Order[i];
                        float* yt = Y + (long)t * YStride + YOffset + o0;
                        float* u = Buffer + (long)t * UStride + UBase + s * USlot;
                        var acc = Vector512.Load(yt);
                        for (int r = 0; r < Rank; r++) acc = Vector512.FusedMultiplyAdd(columns[r], Vector512.Create(u[r]), acc);
                        acc.Store(yt);
                    }
                }
        }

        /// <summary>n &lt; 16 rank values of one row of B (or an F16 row) as F32, zero-padded to 16.</summary>
        [MethodImpl(MethodImplOptions.NoInlining)]
        Vector512<float> PartialRow(byte* p, int n)
        {
            var tmp = stackalloc float[16];
            for (int r = 0; r < 16; r++) tmp[r] = r < n ? HostMemory.WeightAt(p, Type, r) : 0f;
            return Vector512.Load(tmp);
        }

        void RunScalar(byte* slotB, int s, int o0, int first, int count)
        {
            int size = Type == DType.F32 ? 4 : 2;
            for (int i = first; i < first + count; i++)
            {
                int t = Order[i];
                float* u = Buffer + (long)t * UStride + UBase + s * USlot;
                for (int o = o0; o < OutF; o++)
                {
                    byte* row = slotB + (long)o * Rank * size;
                    float* yo = Y + (long)t * YStride + YOffset + o;
                    float acc = *yo;
                    for (int r = 0; r < Rank; r++) acc = MathF.FusedMultiplyAdd(HostMemory.WeightAt(row, Type, r), u[r], acc);
                    *yo = acc;
                }
            }
        }
    }

    /// <summary>Token indices sorted by slot (a counting sort into per-thread arrays): slot s owns Order[Start[s]..Start[s+1]).</summary>
    sealed class SlotGroups
    {
        [ThreadStatic] static SlotGroups? t_groups;

        public int[] Order = [];
        public int[] Start = [];
        public int Slots;

        public static SlotGroups Build(Span<int> slots, int numSlots)
        {
            var g = t_groups ??= new SlotGroups();
            if (g.Order.Length < slots.Length) g.Order = new int[Math.Max(slots.Length, 2 * g.Order.Length)];
            if (g.Start.Length < numSlots + 2) g.Start = new int[Math.Max(numSlots + 2, 2 * g.Start.Length)];
            g.Slots = numSlots;
            var start = g.Start.AsSpan(0, numSlots + 2);
            start.Clear();
            foreach (int s in slots)
                if (s >= 0 && s < numSlots) start[s + 2]++;
            for (int s = 2; s < start.Length; s++) start[s] += start[s - 1];
            // start[s + 1] is now where slot s begins; filling shifts it to where slot s ends = start of slot s + 1.
            for (int t = 0; t < slots.Length; t++)
            {
                int s = slots[t];
                if (s >= 0 && s < numSlots) g.Order[start[s + 1]++] = t;
            }
            return g;
        }
    }

    static void ShrinkPortable(Span<float> buffer, Span<float> x, DeviceTensor a, Span<int> slots, int numSlots, int rank, int inF)
    {
        var row = new float[inF];
        for (int t = 0; t < slots.Length; t++)
        {
            int s = slots[t];
            if (s < 0 || s >= numSlots) continue;
            var xt = x.Slice(t * inF, inF);
            for (int r = 0; r < rank; r++)
                buffer[t * rank + r] = TensorPrimitives.Dot(HostMemory.WeightRow(a, ((long)s * rank + r) * inF, inF, row), xt);
        }
    }

    static void ExpandPortable(Span<float> y, Span<float> buffer, DeviceTensor b, Span<int> slots, LoraShape shape)
    {
        int rank = shape.Rank, outF = shape.Out;
        var row = new float[rank];
        for (int t = 0; t < slots.Length; t++)
        {
            int s = slots[t];
            if (s < 0 || s >= shape.Slots) continue;
            var u = buffer.Slice(t * shape.UStride + shape.UBase + s * shape.USlot, rank);
            for (int o = 0; o < outF; o++)
                y[t * shape.YStride + shape.YOffset + o] += TensorPrimitives.Dot(HostMemory.WeightRow(b, ((long)s * outF + o) * rank, rank, row), u);
        }
    }
}
