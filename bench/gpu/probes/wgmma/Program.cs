// Probe: Hopper's wgmma from an ILGPU kernel. One warpgroup computes D[64x8] = A[64x16] · B[16x8] (BF16, F32
// accumulate) with wgmma.mma_async (A in registers, mma.sync's fragment layout per warp; B in shared memory, K-major
// without swizzle, addressed through a descriptor built from the named shared allocation), and each warp computes its
// 16 rows with mma.sync; the two must agree bit for bit (and with a double reference to rounding). A second kernel
// chains three wgmma m64n32k16 (three B parts, as the split activations) against each warp's four 8-token tiles of
// chained mma.sync. wgmma needs .target sm_90a, which ILGPU does not emit: the kernel's PTX is compiled by ILGPU, its
// target edited, and loaded.
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

#pragma warning disable CS8321 // the kernels are reached by reflection

static uint SharedBase()
{
    uint a = 0;
    Ref<uint> r = a;
    CudaAsm.EmitRef("mov.u32 %0, __shared_alloca0;", ref r);
    return r.Value;
}

// a: [64 rows][16 k] BF16 as uint pairs (8 uints a row); b: [8 tokens][16 k] likewise; d: [64][8] wgmma, then [64][8] mma.sync.
static void Kernel(ArrayView<uint> a, ArrayView<uint> b, ArrayView<float> d)
{
    var sh = SharedMemory.Allocate<uint>(64); // B: two core matrices (k 0-7, k 8-15), each 8 tokens × 16 bytes
    int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    if (tid < 64)
    {
        int n = tid >> 3, kPair = tid & 7;          // token n, k 2·kPair, +1
        int core = kPair >> 2, inRow = kPair & 3;
        sh[core * 32 + n * 4 + inRow] = b[n * 8 + kPair];
    }
    Group.Barrier();
    CudaAsm.Emit("fence.proxy.async.shared::cta;");
    Group.Barrier();

    int row = warp * 16 + g;
    uint a0 = a[row * 8 + t], a1 = a[(row + 8) * 8 + t], a2 = a[row * 8 + 4 + t], a3 = a[(row + 8) * 8 + 4 + t];

    // Descriptor: start >> 4, leading byte offset (k-adjacent core matrices) 128 >> 4, stride byte offset 256 >> 4, no swizzle.
    ulong desc = ((ulong)(SharedBase() >> 4) & 0x3FFF) | ((ulong)(128 >> 4) << 16) | ((ulong)(256 >> 4) << 32);
    float w0 = 0, w1 = 0, w2 = 0, w3 = 0;
    Ref<float> r0 = w0, r1 = w1, r2 = w2, r3 = w3;
    Input<uint> i0 = a0, i1 = a1, i2 = a2, i3 = a3;
    Input<ulong> dsc = desc;
    Input<int> accumulate = 1;
    CudaAsm.Emit("wgmma.fence.sync.aligned;");
    CudaAsm.EmitRef("{ .reg .pred p; setp.ne.b32 p, %9, 0; " +
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 {%0,%1,%2,%3}, {%4,%5,%6,%7}, %8, p, 1, 1, 0; }",
        ref r0, ref r1, ref r2, ref r3, ref i0, ref i1, ref i2, ref i3, ref dsc, ref accumulate);
    CudaAsm.Emit("wgmma.commit_group.sync.aligned;");
    CudaAsm.Emit("wgmma.wait_group.sync.aligned 0;");
    d[row * 8 + 2 * t] = r0.Value;
    d[row * 8 + 2 * t + 1] = r1.Value;
    d[(row + 8) * 8 + 2 * t] = r2.Value;
    d[(row + 8) * 8 + 2 * t + 1] = r3.Value;

    float m0 = 0, m1 = 0, m2 = 0, m3 = 0;
    Ref<float> s0 = m0, s1 = m1, s2 = m2, s3 = m3;
    Input<uint> j0 = b[g * 8 + t], j1 = b[g * 8 + 4 + t];
    CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};",
        ref s0, ref s1, ref s2, ref s3, ref i0, ref i1, ref i2, ref i3, ref j0, ref j1);
    d[512 + row * 8 + 2 * t] = s0.Value;
    d[512 + row * 8 + 2 * t + 1] = s1.Value;
    d[512 + (row + 8) * 8 + 2 * t] = s2.Value;
    d[512 + (row + 8) * 8 + 2 * t + 1] = s3.Value;
}


// a: as above; b: [3 parts][32 tokens][16 k] as uint pairs; d: [64][32] wgmma, then [64][32] mma.sync. Three chained
// wgmma m64n32k16 (one per part, as the split activations are) against each warp's four 8-token tiles of mma.sync chains.
static void Kernel32(ArrayView<uint> a, ArrayView<uint> b, ArrayView<float> d)
{
    var sh = SharedMemory.Allocate<uint>(3 * 256); // per part: 4 token groups (256 B apart) × 2 k core matrices (128 B apart)
    int tid = Group.IdxX, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    for (int w = tid; w < 3 * 256; w += 128)
    {
        int part = w >> 8, n = (w >> 3) & 31, kPair = w & 7;
        sh[part * 256 + (n >> 3) * 64 + (kPair >> 2) * 32 + (n & 7) * 4 + (kPair & 3)] = b[w];
    }
    Group.Barrier();
    CudaAsm.Emit("fence.proxy.async.shared::cta;");
    Group.Barrier();
    int row = warp * 16 + g;
    uint a0 = a[row * 8 + t], a1 = a[(row + 8) * 8 + t], a2 = a[row * 8 + 4 + t], a3 = a[(row + 8) * 8 + 4 + t];
    Input<uint> i0 = a0, i1 = a1, i2 = a2, i3 = a3;
    Input<int> accumulate = 1;
    float z = 0;
    Ref<float> r0 = z, r1 = z, r2 = z, r3 = z, r4 = z, r5 = z, r6 = z, r7 = z, r8 = z, r9 = z, r10 = z, r11 = z, r12 = z, r13 = z, r14 = z, r15 = z;
    CudaAsm.Emit("wgmma.fence.sync.aligned;");
    for (int part = 0; part < 3; part++)
    {
        Input<ulong> dsc = ((ulong)((SharedBase() + (uint)part * 1024) >> 4) & 0x3FFF) | ((ulong)(128 >> 4) << 16) | ((ulong)(256 >> 4) << 32);
        CudaAsm.EmitRef("{ .reg .pred p; setp.ne.b32 p, %21, 0; " +
            "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15}, {%16,%17,%18,%19}, %20, p, 1, 1, 0; }",
            ref r0, ref r1, ref r2, ref r3, ref r4, ref r5, ref r6, ref r7, ref r8, ref r9, ref r10, ref r11, ref r12, ref r13, ref r14, ref r15,
            ref i0, ref i1, ref i2, ref i3, ref dsc, ref accumulate);
    }
    CudaAsm.Emit("wgmma.commit_group.sync.aligned;");
    CudaAsm.Emit("wgmma.wait_group.sync.aligned 0;");
    Store32(d, 0, row, t, 0, r0.Value, r1.Value, r2.Value, r3.Value);
    Store32(d, 0, row, t, 1, r4.Value, r5.Value, r6.Value, r7.Value);
    Store32(d, 0, row, t, 2, r8.Value, r9.Value, r10.Value, r11.Value);
    Store32(d, 0, row, t, 3, r12.Value, r13.Value, r14.Value, r15.Value);
    for (int j = 0; j < 4; j++)
    {
        Ref<float> s0 = z, s1 = z, s2 = z, s3 = z;
        for (int part = 0; part < 3; part++)
        {
            int bRow = (part * 32 + j * 8 + g) * 8;
            Input<uint> j0 = b[bRow + t], j1 = b[bRow + 4 + t];
            CudaAsm.EmitRef("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};",
                ref s0, ref s1, ref s2, ref s3, ref i0, ref i1, ref i2, ref i3, ref j0, ref j1);
        }
        Store32(d, 2048, row, t, j, s0.Value, s1.Value, s2.Value, s3.Value);
    }
}

static void Store32(ArrayView<float> d, int at, int row, int t, int j, float v0, float v1, float v2, float v3)
{
    d[at + row * 32 + 8 * j + 2 * t] = v0;
    d[at + row * 32 + 8 * j + 2 * t + 1] = v1;
    d[at + (row + 8) * 32 + 8 * j + 2 * t] = v2;
    d[at + (row + 8) * 32 + 8 * j + 2 * t + 1] = v3;
}

using var context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2));
MethodInfo Find(string name) => typeof(Program).GetMethods(BindingFlags.NonPublic | BindingFlags.Static).Single(m => m.Name.Contains("g__" + name + "|"));
static string ToSm90a(string ptx) => System.Text.RegularExpressions.Regex.Replace(
    System.Text.RegularExpressions.Regex.Replace(ptx, @"\.target sm_\d+", ".target sm_90a"), @"\.version \d+\.\d+", ".version 8.0");
if (args.Length == 2 && args[0] == "--ptx")
{
    using var backend = new PTXBackend(context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, null!);
    Directory.CreateDirectory(args[1]);
    foreach (var name in new[] { "Kernel", "Kernel32" })
    {
        var c = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(Find(name)), new KernelSpecialization());
        File.WriteAllText(Path.Combine(args[1], name + ".ptx"), ToSm90a(c.PTXAssembly));
    }
    return 0;
}
using var acc = context.CreateCudaAccelerator(0);
Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<float>> Load(MethodInfo m)
{
    var compiled = (PTXCompiledKernel)acc.GetBackend().Compile(EntryPointDescription.FromExplicitlyGroupedKernel(m), new KernelSpecialization());
    // PTXCompiledKernel's constructor and EntryPoint are internal in ILGPU 1.5.3.
    const BindingFlags Any = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance;
    var entry = typeof(CompiledKernel).GetProperty("EntryPoint", Any)!.GetValue(compiled);
    var info = typeof(CompiledKernel).GetProperty("Info", Any)!.GetValue(compiled);
    var patched = (PTXCompiledKernel)typeof(PTXCompiledKernel).GetConstructors(Any).Single(c => c.GetParameters().Length == 4)
        .Invoke([context, entry, info, ToSm90a(compiled.PTXAssembly)]);
    return acc.LoadKernel(patched).CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<float>>>();
}
float[] Run(MethodInfo m, uint[] av, uint[] bv, int outputs)
{
    using var aBuf = acc.Allocate1D(av);
    using var bBuf = acc.Allocate1D(bv);
    using var dBuf = acc.Allocate1D<float>(outputs);
    Load(m)(acc.DefaultStream, new KernelConfig(1, 128), aBuf.View, bBuf.View, dBuf.View);
    acc.Synchronize();
    return dBuf.GetAsArray1D();
}
static double Bf(uint pair, int half) => BitConverter.Int32BitsToSingle((int)(half == 0 ? pair << 16 : pair & 0xFFFF0000u));
var rnd = new Random(5);
// BF16 pairs with exponents over 2^-8..2^8 and both signs, so that rounding inside the sums shows.
uint Half() => (uint)(rnd.Next(0x3780, 0x4380) | rnd.Next(2) << 15);
uint Pair() => Half() | Half() << 16;
var aw = Enumerable.Range(0, 64 * 8).Select(_ => Pair()).ToArray();
int failures = 0;
foreach (var (name, tokens, parts) in new[] { ("Kernel", 8, 1), ("Kernel32", 32, 3) })
{
    var bw = Enumerable.Range(0, parts * tokens * 8).Select(_ => Pair()).ToArray();
    var dv = Run(Find(name), aw, bw, 2 * 64 * tokens);
    int same = 0, close = 0, n = 64 * tokens;
    for (int r = 0; r < 64; r++)
        for (int c = 0; c < tokens; c++)
        {
            double want = 0;
            for (int p = 0; p < parts; p++)
                for (int k = 0; k < 16; k++) want += Bf(aw[r * 8 + k / 2], k & 1) * Bf(bw[(p * tokens + c) * 8 + k / 2], k & 1);
            float got = dv[r * tokens + c], mma = dv[n + r * tokens + c];
            if (BitConverter.SingleToInt32Bits(got) == BitConverter.SingleToInt32Bits(mma)) same++;
            if (Math.Abs(got - want) <= 1e-5 * Math.Max(1, Math.Abs(want))) close++;
        }
    Console.WriteLine($"wgmma m64n{tokens}k16 x{parts} chained vs mma.sync: {same}/{n} bit-identical; vs double reference: {close}/{n} within 1e-5");
    if (same != n || close != n) failures++;
}
return failures;
