// Probe: ILGPU names a kernel's shared allocations __shared_alloca0, 1, … in its PTX; inline PTX can take their
// shared-window address by name (mov.u32), which ldmatrix and cp.async need and ArrayView does not expose.
// Run on a CUDA machine: dotnet smem.dll; without one: dotnet smem.dll --ptx DIR (writes the PTX for ptxas).
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

static uint SharedBase()
{
    uint a = 0;
    Ref<uint> r = a;
    CudaAsm.EmitRef("mov.u32 %0, __shared_alloca0;", ref r);
    return r.Value;
}

// 32 threads: sh = input[0..128); each lane ldmatrix.x4's row lane (16 bytes), then cp.async copies input[128..256)
// into sh[128..256) (lane's 16 bytes from the global address the host passed) and the lane reads it back.
static void Kernel(ArrayView<uint> input, ArrayView<uint> output, long inputAddress)
{
    var sh = SharedMemory.Allocate<uint>(256);
    int lane = Group.IdxX;
    for (int j = 0; j < 4; j++) sh[lane * 4 + j] = input[lane * 4 + j];
    Group.Barrier();
    uint addr = SharedBase() + (uint)lane * 16;
    uint r0 = 0, r1 = 0, r2 = 0, r3 = 0;
    Ref<uint> d0 = r0, d1 = r1, d2 = r2, d3 = r3;
    Input<uint> at = addr;
    CudaAsm.EmitRef("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];", ref d0, ref d1, ref d2, ref d3, ref at);
    output[lane * 4 + 0] = d0.Value;
    output[lane * 4 + 1] = d1.Value;
    output[lane * 4 + 2] = d2.Value;
    output[lane * 4 + 3] = d3.Value;

    Input<uint> dst = addr + 512;
    Input<long> src = inputAddress + 512 + lane * 16;
    CudaAsm.EmitRef("cp.async.cg.shared.global [%0], [%1], 16;", ref dst, ref src);
    CudaAsm.Emit("cp.async.wait_all;");
    Group.Barrier();
    for (int j = 0; j < 4; j++) output[128 + lane * 4 + j] = sh[128 + lane * 4 + j];
}

using var context = Context.Create(b => b.Cuda().Optimize(OptimizationLevel.O2));
if (args.Length == 2 && args[0] == "--ptx")
{
    using var backend = new PTXBackend(context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_78, null!);
    var method = typeof(Program).GetMethods(System.Reflection.BindingFlags.NonPublic | System.Reflection.BindingFlags.Static)
        .Single(m => m.Name.Contains("Kernel"));
    var compiled = (PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), new KernelSpecialization());
    Directory.CreateDirectory(args[1]);
    File.WriteAllText(Path.Combine(args[1], "smem.ptx"), compiled.PTXAssembly.Replace(".target sm_80", ".target sm_90"));
    return 0;
}
using var acc = context.CreateCudaAccelerator(0);
var k = acc.LoadStreamKernel<ArrayView<uint>, ArrayView<uint>, long>(Kernel);
var data = Enumerable.Range(0, 256).Select(i => (uint)(i * 2654435761u)).ToArray();
using var inBuf = acc.Allocate1D(data);
using var outBuf = acc.Allocate1D<uint>(256);
k(new KernelConfig(1, 32), inBuf.View, outBuf.View, inBuf.NativePtr.ToInt64());
acc.Synchronize();
var got = outBuf.GetAsArray1D();
int bad = 0;
for (int lane = 0; lane < 32; lane++)
    for (int m = 0; m < 4; m++)
        if (got[lane * 4 + m] != data[(m * 8 + lane / 4) * 4 + lane % 4]) bad++;
int badCopy = Enumerable.Range(128, 128).Count(i => got[i] != data[i]);
Console.WriteLine($"ldmatrix through the named shared allocation: {128 - bad}/128 words right; cp.async: {128 - badCopy}/128");
return bad + badCopy == 0 ? 0 : 1;
