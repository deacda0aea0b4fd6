// Probe: Hopper's wgmma from an ILGPU kernel. One warpgroup computes D[64x8] = A[64x16] · B[16x8] (BF16, F32
// accumulate) with wgmma.mma_async (A in registers, mma.sync's fragment layout per warp; B in shared memory, K-major
// without swizzle, addressed through a descriptor built from the named shared allocation), and each warp computes its
// 16 rows with mma.sync; the two must agree bit for bit (and with a double reference to rounding). wgmma needs
// .target sm_90a, which ILGPU does not emit: the kernel's PTX is compiled by ILGPU, its target edited, and loaded.
using System.Reflection;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

#pragma warning disable CS8321 // Kernel is reached by reflection

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

using var context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2));
var method = typeof(Program).GetMethods(BindingFlags.NonPublic | BindingFlags.Static).Single(m => m.Name.Contains("Kernel"));
static string ToSm90a(string ptx) => System.Text.RegularExpressions.Regex.Replace(
    System.Text.RegularExpressions.Regex.Replace(ptx, @"\.target sm_\d+", ".target sm_90a"), @"\.version \d+\.\d+", ".version 8.0");
if (args.Length == 2 && args[0] == "--ptx")
{
    using var backend = new PTXBackend(context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, null!);
    var c = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), new KernelSpecialization());
    Directory.CreateDirectory(args[1]);
    File.WriteAllText(Path.Combine(args[1], "wgmma.ptx"), ToSm90a(c.PTXAssembly));
    return 0;
}
using var acc = context.CreateCudaAccelerator(0);
var compiled = (PTXCompiledKernel)acc.GetBackend().Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), new KernelSpecialization());
// PTXCompiledKernel's constructor and EntryPoint are internal in ILGPU 1.5.3.
const BindingFlags Any = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance;
var entry = typeof(CompiledKernel).GetProperty("EntryPoint", Any)!.GetValue(compiled);
var info = typeof(CompiledKernel).GetProperty("Info", Any)!.GetValue(compiled);
var patched = (PTXCompiledKernel)typeof(PTXCompiledKernel).GetConstructors(Any).Single(c => c.GetParameters().Length == 4)
    .Invoke([context, entry, info, ToSm90a(compiled.PTXAssembly)]);
using var kernel = acc.LoadKernel(patched);
var launch = kernel.CreateLauncherDelegate<Action<AcceleratorStream, KernelConfig, ArrayView<uint>, ArrayView<uint>, ArrayView<float>>>();
var rnd = new Random(5);
uint Bf16Pair() => (uint)(rnd.Next(0x3C00, 0x4080) | rnd.Next(0x3C00, 0x4080) << 16 | (rnd.Next(2) << 15) | (rnd.Next(2) << 31));
var av = Enumerable.Range(0, 64 * 8).Select(_ => Bf16Pair()).ToArray();
var bv = Enumerable.Range(0, 8 * 8).Select(_ => Bf16Pair()).ToArray();
using var aBuf = acc.Allocate1D(av);
using var bBuf = acc.Allocate1D(bv);
using var dBuf = acc.Allocate1D<float>(1024);
launch(acc.DefaultStream, new KernelConfig(1, 128), aBuf.View, bBuf.View, dBuf.View);
acc.Synchronize();
var dv = dBuf.GetAsArray1D();
static double Bf(uint pair, int half) => BitConverter.Int32BitsToSingle((int)(half == 0 ? pair << 16 : pair & 0xFFFF0000u));
int same = 0, close = 0;
for (int r = 0; r < 64; r++)
    for (int n = 0; n < 8; n++)
    {
        double want = 0;
        for (int k = 0; k < 16; k++) want += Bf(av[r * 8 + k / 2], k & 1) * Bf(bv[n * 8 + k / 2], k & 1);
        if (BitConverter.SingleToInt32Bits(dv[r * 8 + n]) == BitConverter.SingleToInt32Bits(dv[512 + r * 8 + n])) same++;
        if (Math.Abs(dv[r * 8 + n] - want) <= 1e-5 * Math.Max(1, Math.Abs(want))) close++;
    }
Console.WriteLine($"wgmma m64n8k16 vs mma.sync: {same}/512 bit-identical; wgmma vs double reference: {close}/512 within 1e-5");
return same == 512 && close == 512 ? 0 : 1;
