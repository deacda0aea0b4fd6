using ILGPU;
using ILGPU.Runtime.Cuda;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The two instructions the tensor-core linear is built from, as a compile-time choice of the kernels' type argument:
/// <see cref="PtxOps"/> (inline PTX, CUDA) or <see cref="EmulatedOps"/> (plain C# through shared memory, for ILGPU's CPU
/// accelerator, so the kernels' indexing, staging and slice bookkeeping are tested without a GPU).
/// </summary>
internal interface ITensorCoreOps
{
    /// <summary>bf16(v0) | bf16(v1) &lt;&lt; 16, rounded to nearest even.</summary>
    uint PackBf16(float v0, float v1);

    /// <summary>
    /// <c>mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32</c>, d += A·B for the warp: lane (g, t) = (lane / 4,
    /// lane % 4) holds A rows g (a0: k 2t, 2t+1; a2: k 2t+8, 2t+9) and g+8 (a1, a3), B column g (b0: k 2t, 2t+1; b1: k
    /// 2t+8, 2t+9), and D rows g (d0, d1) and g+8 (d2, d3) at columns 2t, 2t+1. Low halves hold the first element.
    /// </summary>
    void Mma(ref float d0, ref float d1, ref float d2, ref float d3, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1);

    /// <summary>
    /// The shared-window address of the kernel's first shared allocation (ILGPU names it <c>__shared_alloca0</c> in its
    /// PTX; <c>ArrayView</c> exposes no address). Only <see cref="CopyAsync"/> uses it.
    /// </summary>
    uint FirstSharedAddress();

    /// <summary>
    /// <c>cp.async.cg</c>: 16 bytes from <paramref name="source"/>[<paramref name="index"/>] (device address
    /// <paramref name="sourceAddress"/>) to <paramref name="shared"/>[<paramref name="at"/>] (shared address
    /// <paramref name="sharedAddress"/>) without passing through registers; zeros where <paramref name="valid"/> is false.
    /// Complete for this thread once <see cref="WaitCopies"/> says so.
    /// </summary>
    void CopyAsync(ArrayView<U4> shared, int at, uint sharedAddress, ArrayView<U4> source, long index, long sourceAddress, bool valid);

    /// <summary>Closes this thread's copies issued since the last commit into one group.</summary>
    void CommitCopies();

    /// <summary>Waits until at most three of this thread's committed copy groups are pending (the ring's depth less one).</summary>
    void WaitCopies();

    /// <summary>Waits until at most one of this thread's committed copy groups is pending (the tile kernel's three-stage ring).</summary>
    void WaitCopiesButOne();

    /// <summary>
    /// Asks L2 for the 128-byte line at device address <paramref name="address"/> (<c>prefetch.global.L2</c>): what a
    /// kernel reads before <see cref="WaitForPrerequisites"/> without a register to hold it.
    /// </summary>
    void PrefetchL2(long address);

    /// <summary>
    /// Waits until the kernels this launch depends on have finished and their writes are visible
    /// (<c>griddepcontrol.wait</c> on Hopper, where <see cref="PtxKernels"/> makes it one). Launched eagerly it returns at
    /// once; in a CUDA graph whose edge into this kernel is programmatic (<see cref="DeviceGraph"/>) the kernel may
    /// start before they finish, so everything before this call may read the weights only — never the activations,
    /// never a write.
    /// </summary>
    void WaitForPrerequisites();

    /// <summary>
    /// The six MMAs of a 32-wide chunk for a warpgroup (4 warps: 64 rows × 32 tokens), in <c>MmaSplit</c>'s order —
    /// k16 half 0 against hi, mid, lo, then half 1 — as chained <c>wgmma.mma_async m64n32k16</c> (sm_90a), which give
    /// the bits of the same <c>mma.sync</c> chains (H100: 2048/2048). A (this warp's 16 rows) comes from registers:
    /// a, b are rows g and g+8 as the ring holds them. B comes from <paramref name="stage"/> (uint index
    /// <paramref name="at"/>, shared address <paramref name="address"/>): six 1 KB blocks, block 2·part + half, each
    /// K-major core matrices without swizzle (TensorCoreLinear.WarpGroupChunks). c: the warp's four token tiles, as mma.sync's D.
    /// Returns with the MMAs complete.
    /// </summary>
    void WarpGroupChunk(ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
        ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33,
        U4 a, U4 b, ArrayView<uint> stage, int at, uint address);

    /// <summary>Makes this thread's shared-memory writes visible to the tensor cores' reads (wgmma's async proxy); a barrier follows.</summary>
    void FenceProxyAsync();

    /// <summary>The shared-window address of the kernel's second shared allocation (<c>__shared_alloca1</c>).</summary>
    uint SecondSharedAddress();

    /// <summary>
    /// <see cref="WarpGroupChunk"/> for 64 tokens: the six MMAs of a 32-wide chunk for a warpgroup (64 rows × 64
    /// tokens) as chained <c>wgmma.mma_async m64n64k16</c> (sm_90a), in <c>MmaSplit</c>'s order. A from registers (a, b:
    /// rows g and g+8), B from <paramref name="stage"/>: six 2 KB blocks, block 2·part + half, each eight 8-token groups
    /// of K-major core matrices without swizzle (TensorCoreLinear.WarpGroupTileChunks). c0 … c7: the warp's eight token
    /// tiles, as mma.sync's D (X, Y: row g, tokens 2t, 2t+1; Z, W: row g+8). Returns with the MMAs complete.
    /// </summary>
    void WarpGroupTileChunk(ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7,
        U4 a, U4 b, ArrayView<uint> stage, int at, uint address);
}

/// <summary>The tensor cores through inline PTX (CUDA only).</summary>
internal readonly struct PtxOps : ITensorCoreOps
{
    const string MmaPtx = "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 " +
                       "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};";

    /// <summary>One <c>cvt.rn.bf16x2.f32</c> (its first source goes high).</summary>
    public uint PackBf16(float v0, float v1)
    {
        uint packed = 0;
        Ref<uint> d = packed;
        Input<float> high = v1, low = v0;
        CudaAsm.EmitRef("cvt.rn.bf16x2.f32 %0, %1, %2;", ref d, ref high, ref low);
        return d.Value;
    }

    public void Mma(ref float d0, ref float d1, ref float d2, ref float d3, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
    {
        Ref<float> r0 = d0, r1 = d1, r2 = d2, r3 = d3;
        Input<uint> i0 = a0, i1 = a1, i2 = a2, i3 = a3, j0 = b0, j1 = b1;
        CudaAsm.EmitRef(MmaPtx, ref r0, ref r1, ref r2, ref r3, ref i0, ref i1, ref i2, ref i3, ref j0, ref j1);
        d0 = r0.Value;
        d1 = r1.Value;
        d2 = r2.Value;
        d3 = r3.Value;
    }

    public uint FirstSharedAddress()
    {
        uint address = 0;
        Ref<uint> r = address;
        CudaAsm.EmitRef("mov.u32 %0, __shared_alloca0;", ref r);
        return r.Value;
    }

    public void CopyAsync(ArrayView<U4> shared, int at, uint sharedAddress, ArrayView<U4> source, long index, long sourceAddress, bool valid)
    {
        // Operands by value, so no local copies of its own. Once a cp.async is in a kernel, ptxas (11.8 and 12) leaves the
        // local copies ILGPU makes of the MMAs' operands on the stack (1256 bytes in the row kernel, 0 without it):
        // PtxKernels.PromoteScalarLocals makes them registers before the driver sees the PTX.
        long from = sourceAddress + (valid ? index : 0) * 16;
        CudaAsm.Emit("cp.async.cg.shared.global [%0], [%1], 16, %2;", sharedAddress + (uint)at * 16, from, valid ? 16u : 0u);
    }

    public void CommitCopies() => CudaAsm.Emit("cp.async.commit_group;");

    public void WaitCopies() => CudaAsm.Emit("cp.async.wait_group 3;");

    public void WaitCopiesButOne() => CudaAsm.Emit("cp.async.wait_group 1;");

    public void PrefetchL2(long address) => CudaAsm.Emit("prefetch.global.L2 [%0];", address);

    // A marker, not an instruction: griddepcontrol needs sm_90, and these kernels also load on older GPUs.
    public void WaitForPrerequisites() => CudaAsm.Emit(PtxKernels.GridDependencyWaitMarker);

    const string Wg = "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, ";
    // The asm text must be a constant for ILGPU (a string built at run time is refused: "Class type 'System.String' is
    // not supported"), so the two chains share their constant parts: six chained wgmma between these, the predicate p
    // (scale-d = 1) and q0 … q5 the stage's six block descriptors.
    const string WgChainStart = "{ .reg .pred p; .reg .b32 one; .reg .b64 q0, q1, q2, q3, q4, q5; mov.b32 one, 1; setp.ne.b32 p, one, 0; ";
    const string WgChainEnd = "wgmma.commit_group.sync.aligned; wgmma.wait_group.sync.aligned 0; }";

    const string WarpGroupPtx = WgChainStart + "mov.b64 q0, {%24, %25}; " +
        "add.s64 q1, q0, 64; add.s64 q2, q0, 128; add.s64 q3, q0, 192; add.s64 q4, q0, 256; add.s64 q5, q0, 320; " +
        "wgmma.fence.sync.aligned; " +
        Wg + "{%16,%17,%18,%19}, q0, p, 1, 1, 0; " +
        Wg + "{%16,%17,%18,%19}, q2, p, 1, 1, 0; " +
        Wg + "{%16,%17,%18,%19}, q4, p, 1, 1, 0; " +
        Wg + "{%20,%21,%22,%23}, q1, p, 1, 1, 0; " +
        Wg + "{%20,%21,%22,%23}, q3, p, 1, 1, 0; " +
        Wg + "{%20,%21,%22,%23}, q5, p, 1, 1, 0; " +
        WgChainEnd;

    public void WarpGroupChunk(ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
        ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33,
        U4 a, U4 b, ArrayView<uint> stage, int at, uint address)
    {
        // Block q starts q KB later: q · 64 in the descriptor.
        StageDescriptor(address, at, out uint descLow, out uint descHigh);
        Ref<float> r0 = c00, r1 = c01, r2 = c02, r3 = c03, r4 = c10, r5 = c11, r6 = c12, r7 = c13;
        Ref<float> r8 = c20, r9 = c21, r10 = c22, r11 = c23, r12 = c30, r13 = c31, r14 = c32, r15 = c33;
        Input<uint> i0 = a.X, i1 = b.X, i2 = a.Y, i3 = b.Y, i4 = a.Z, i5 = b.Z, i6 = a.W, i7 = b.W;
        Input<uint> dl = descLow, dh = descHigh;
        CudaAsm.EmitRef(WarpGroupPtx, ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7, ref r8, ref r9, ref r10, ref r11,
            ref r12, ref r13, ref r14, ref r15, ref i0, ref i1, ref i2, ref i3, ref i4, ref i5, ref i6, ref i7, ref dl, ref dh);
        c00 = r0.Value; c01 = r1.Value; c02 = r2.Value; c03 = r3.Value; c10 = r4.Value; c11 = r5.Value; c12 = r6.Value; c13 = r7.Value;
        c20 = r8.Value; c21 = r9.Value; c22 = r10.Value; c23 = r11.Value; c30 = r12.Value; c31 = r13.Value; c32 = r14.Value; c33 = r15.Value;
    }

    /// <summary>
    /// The wgmma descriptor of a stage's block 0 at uint <paramref name="at"/> past shared address <paramref name="address"/>
    /// (low word, high word): start address / 16 and the leading byte offset (the k-adjacent core matrix) 128 / 16; the
    /// stride byte offset (the next 8 tokens) 256 / 16; no swizzle. (Two words: a 64-bit operand went through a local variable.)
    /// </summary>
    static void StageDescriptor(uint address, int at, out uint low, out uint high)
    {
        low = (((address + (uint)at * 4) >> 4) & 0x3FFF) | (128u >> 4) << 16;
        high = 256u >> 4;
    }

    public void FenceProxyAsync() => CudaAsm.Emit("fence.proxy.async.shared::cta;");

    public uint SecondSharedAddress()
    {
        uint address = 0;
        Ref<uint> r = address;
        CudaAsm.EmitRef("mov.u32 %0, __shared_alloca1;", ref r);
        return r.Value;
    }

    const string WgTile = "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, ";
    const string WarpGroupTilePtx = WgChainStart + "mov.b64 q0, {%40, %41}; " +
        "add.s64 q1, q0, 128; add.s64 q2, q0, 256; add.s64 q3, q0, 384; add.s64 q4, q0, 512; add.s64 q5, q0, 640; " +
        "wgmma.fence.sync.aligned; " +
        WgTile + "{%32,%33,%34,%35}, q0, p, 1, 1, 0; " +
        WgTile + "{%32,%33,%34,%35}, q2, p, 1, 1, 0; " +
        WgTile + "{%32,%33,%34,%35}, q4, p, 1, 1, 0; " +
        WgTile + "{%36,%37,%38,%39}, q1, p, 1, 1, 0; " +
        WgTile + "{%36,%37,%38,%39}, q3, p, 1, 1, 0; " +
        WgTile + "{%36,%37,%38,%39}, q5, p, 1, 1, 0; " +
        WgChainEnd;

    public void WarpGroupTileChunk(ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7,
        U4 a, U4 b, ArrayView<uint> stage, int at, uint address)
    {
        // Blocks 2 KB apart: block q at q · 128 in the descriptor.
        StageDescriptor(address, at, out uint descLow, out uint descHigh);
        Ref<float> r0 = c0.X, r1 = c0.Y, r2 = c0.Z, r3 = c0.W, r4 = c1.X, r5 = c1.Y, r6 = c1.Z, r7 = c1.W;
        Ref<float> r8 = c2.X, r9 = c2.Y, r10 = c2.Z, r11 = c2.W, r12 = c3.X, r13 = c3.Y, r14 = c3.Z, r15 = c3.W;
        Ref<float> r16 = c4.X, r17 = c4.Y, r18 = c4.Z, r19 = c4.W, r20 = c5.X, r21 = c5.Y, r22 = c5.Z, r23 = c5.W;
        Ref<float> r24 = c6.X, r25 = c6.Y, r26 = c6.Z, r27 = c6.W, r28 = c7.X, r29 = c7.Y, r30 = c7.Z, r31 = c7.W;
        Input<uint> i0 = a.X, i1 = b.X, i2 = a.Y, i3 = b.Y, i4 = a.Z, i5 = b.Z, i6 = a.W, i7 = b.W;
        Input<uint> dl = descLow, dh = descHigh;
        CudaAsm.EmitRef(WarpGroupTilePtx, ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7, ref r8, ref r9, ref r10, ref r11,
            ref r12, ref r13, ref r14, ref r15, ref r16, ref r17, ref r18, ref r19, ref r20, ref r21, ref r22, ref r23,
            ref r24, ref r25, ref r26, ref r27, ref r28, ref r29, ref r30, ref r31, ref i0, ref i1, ref i2, ref i3, ref i4, ref i5, ref i6, ref i7,
            ref dl, ref dh);
        c0 = new F4 { X = r0.Value, Y = r1.Value, Z = r2.Value, W = r3.Value };
        c1 = new F4 { X = r4.Value, Y = r5.Value, Z = r6.Value, W = r7.Value };
        c2 = new F4 { X = r8.Value, Y = r9.Value, Z = r10.Value, W = r11.Value };
        c3 = new F4 { X = r12.Value, Y = r13.Value, Z = r14.Value, W = r15.Value };
        c4 = new F4 { X = r16.Value, Y = r17.Value, Z = r18.Value, W = r19.Value };
        c5 = new F4 { X = r20.Value, Y = r21.Value, Z = r22.Value, W = r23.Value };
        c6 = new F4 { X = r24.Value, Y = r25.Value, Z = r26.Value, W = r27.Value };
        c7 = new F4 { X = r28.Value, Y = r29.Value, Z = r30.Value, W = r31.Value };
    }
}

/// <summary>
/// The same fragments and results in plain C#: the warp's lanes write their fragments to shared memory, and each lane
/// reads its two rows of A and two columns of B from there and adds the 16 exact BF16 products to d in k order. (On the
/// CPU accelerator a warp shuffle is a barrier of the warp's threads: with 32 shuffles an MMA the emulated test took 57 s
/// on the 2-core machine, with two barriers 5.2 s.) The hardware's order of additions inside an MMA is its own, so
/// results agree with <see cref="PtxOps"/> to rounding, and bit for bit among kernels that issue the same MMAs in the
/// same order, which is what the tests check.
/// </summary>
internal readonly struct EmulatedOps : ITensorCoreOps
{
    const int MaxWarps = 8;        // the largest group a tensor-core kernel launches
    const int FragmentWords = 6;   // a0..a3, b0, b1

    public uint PackBf16(float v0, float v1) => Bf16(v0) | Bf16(v1) << 16;

    static uint Bf16(float v)
    {
        uint u = (uint)Interop.FloatAsInt(v);
        if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (u >> 16) | 0x40; // NaN stays NaN
        return (u + 0x7FFF + ((u >> 16) & 1)) >> 16;
    }

    public void Mma(ref float d0, ref float d1, ref float d2, ref float d3, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1)
    {
        // [warp][word][lane]: this warp's fragments, readable by all its lanes after the barrier.
        var fragments = SharedMemory.Allocate<uint>(MaxWarps * FragmentWords * 32);
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        int at = Warp.WarpIdx * FragmentWords * 32;
        fragments[at + lane] = a0;
        fragments[at + 32 + lane] = a1;
        fragments[at + 64 + lane] = a2;
        fragments[at + 96 + lane] = a3;
        fragments[at + 128 + lane] = b0;
        fragments[at + 160 + lane] = b1;
        Warp.Barrier();
        float s0 = d0, s1 = d1, s2 = d2, s3 = d3;
        for (int half = 0; half < 2; half++)
        {
            int rowWord = at + half * 64, colWord = at + 128 + half * 32;
            for (int tt = 0; tt < 4; tt++)
            {
                // k = 8·half + 2·tt, +1: rows g and g+8 from lane (g, tt), columns 2t and 2t+1 from lanes (2t, tt), (2t+1, tt).
                uint rowG = fragments[rowWord + 4 * g + tt];
                uint rowG8 = fragments[rowWord + 32 + 4 * g + tt];
                uint col0 = fragments[colWord + 8 * t + tt];
                uint col1 = fragments[colWord + 8 * t + 4 + tt];
                s0 = Dot2(s0, rowG, col0);
                s1 = Dot2(s1, rowG, col1);
                s2 = Dot2(s2, rowG8, col0);
                s3 = Dot2(s3, rowG8, col1);
            }
        }
        Warp.Barrier(); // every lane has read before the next MMA overwrites
        d0 = s0;
        d1 = s1;
        d2 = s2;
        d3 = s3;
    }

    public uint FirstSharedAddress() => 0;

    /// <summary>A plain copy: the CPU accelerator runs a thread's statements in order.</summary>
    public void CopyAsync(ArrayView<U4> shared, int at, uint sharedAddress, ArrayView<U4> source, long index, long sourceAddress, bool valid) =>
        shared[at] = valid ? source[index] : default;

    public void CommitCopies() { }

    public void WaitCopies() { }

    public void WaitCopiesButOne() { }

    public void PrefetchL2(long address) { }

    /// <summary>Nothing to wait for: the CPU accelerator runs one launch after another.</summary>
    public void WaitForPrerequisites() { }

    /// <summary>Each warp's share of the warpgroup's m64n32k16 MMAs: <see cref="WarpGroupMmas"/> over four token tiles, 1 KB blocks.</summary>
    public void WarpGroupChunk(ref float c00, ref float c01, ref float c02, ref float c03, ref float c10, ref float c11, ref float c12, ref float c13,
        ref float c20, ref float c21, ref float c22, ref float c23, ref float c30, ref float c31, ref float c32, ref float c33,
        U4 a, U4 b, ArrayView<uint> stage, int at, uint address)
    {
        F4 d0 = new() { X = c00, Y = c01, Z = c02, W = c03 }, d1 = new() { X = c10, Y = c11, Z = c12, W = c13 };
        F4 d2 = new() { X = c20, Y = c21, Z = c22, W = c23 }, d3 = new() { X = c30, Y = c31, Z = c32, W = c33 };
        F4 unused = default;
        WarpGroupMmas(ref d0, ref d1, ref d2, ref d3, ref unused, ref unused, ref unused, ref unused, 4, 256, a, b, stage, at);
        (c00, c01, c02, c03, c10, c11, c12, c13) = (d0.X, d0.Y, d0.Z, d0.W, d1.X, d1.Y, d1.Z, d1.W);
        (c20, c21, c22, c23, c30, c31, c32, c33) = (d2.X, d2.Y, d2.Z, d2.W, d3.X, d3.Y, d3.Z, d3.W);
    }

    public void FenceProxyAsync() { }

    public uint SecondSharedAddress() => 0;

    /// <summary>Each warp's share of the warpgroup's m64n64k16 MMAs: <see cref="WarpGroupMmas"/> over eight token tiles, 2 KB blocks.</summary>
    public void WarpGroupTileChunk(ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7,
        U4 a, U4 b, ArrayView<uint> stage, int at, uint address) =>
        WarpGroupMmas(ref c0, ref c1, ref c2, ref c3, ref c4, ref c5, ref c6, ref c7, 8, 512, a, b, stage, at);

    /// <summary>
    /// A warp's share of a warpgroup's six chained wgmma as emulated mma.sync chains over its first <paramref name="tiles"/>
    /// token tiles, its B fragments read from the stage where the descriptor puts them (not through the kernel's own
    /// indexing, so a wrong layout fails the tests): blocks of <paramref name="blockWords"/> (2 · part + half), in uint
    /// words the k-adjacent core matrix LBO = 128 B on, the next 8 tokens SBO = 256 B on, a core matrix's token n at 16 n
    /// bytes, k pair p at 4 p.
    /// </summary>
    void WarpGroupMmas(ref F4 c0, ref F4 c1, ref F4 c2, ref F4 c3, ref F4 c4, ref F4 c5, ref F4 c6, ref F4 c7, int tiles, int blockWords,
        U4 a, U4 b, ArrayView<uint> stage, int at)
    {
        const int Lbo = 32, Sbo = 64;
        int lane = Warp.LaneIdx, g = lane >> 2, t = lane & 3;
        for (int half = 0; half < 2; half++)
        {
            uint a0 = half == 0 ? a.X : a.Z, a1 = half == 0 ? b.X : b.Z, a2 = half == 0 ? a.Y : a.W, a3 = half == 0 ? b.Y : b.W;
            for (int part = 0; part < 3; part++)
            {
                // Token 8j + g of block (part, half): b0 = k pair t (k 2t, 2t+1), b1 = k pair t + 4 (the next core matrix along k).
                int q = at + (2 * part + half) * blockWords + g * 4 + t;
                TileMma(ref c0, a0, a1, a2, a3, stage[q], stage[q + Lbo]);
                TileMma(ref c1, a0, a1, a2, a3, stage[q + Sbo], stage[q + Sbo + Lbo]);
                TileMma(ref c2, a0, a1, a2, a3, stage[q + 2 * Sbo], stage[q + 2 * Sbo + Lbo]);
                TileMma(ref c3, a0, a1, a2, a3, stage[q + 3 * Sbo], stage[q + 3 * Sbo + Lbo]);
                if (tiles == 4) continue;
                TileMma(ref c4, a0, a1, a2, a3, stage[q + 4 * Sbo], stage[q + 4 * Sbo + Lbo]);
                TileMma(ref c5, a0, a1, a2, a3, stage[q + 5 * Sbo], stage[q + 5 * Sbo + Lbo]);
                TileMma(ref c6, a0, a1, a2, a3, stage[q + 6 * Sbo], stage[q + 6 * Sbo + Lbo]);
                TileMma(ref c7, a0, a1, a2, a3, stage[q + 7 * Sbo], stage[q + 7 * Sbo + Lbo]);
            }
        }
    }

    /// <summary>One emulated mma.sync into a token tile's D.</summary>
    void TileMma(ref F4 d, uint a0, uint a1, uint a2, uint a3, uint b0, uint b1) => Mma(ref d.X, ref d.Y, ref d.Z, ref d.W, a0, a1, a2, a3, b0, b1);

    /// <summary>s + a.lo·b.lo + a.hi·b.hi, left to right (each product of two BF16 values is exact in F32).</summary>
    static float Dot2(float s, uint a, uint b)
    {
        s += Interop.IntAsFloat(a << 16) * Interop.IntAsFloat(b << 16);
        return s + Interop.IntAsFloat(a & 0xFFFF0000u) * Interop.IntAsFloat(b & 0xFFFF0000u);
    }
}
