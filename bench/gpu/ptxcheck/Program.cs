// ptxcheck: compile ILGPU kernels of a .NET assembly to PTX without a GPU, through ILGPU's PTXBackend.
using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

const string Usage = """
usage: ptxcheck [--asm PATH] [--out DIR] [--arch SM_90] [--isa ISA_80] [--opt O2] [--implicit] [--list TYPE]
                [KERNEL ...]
  KERNEL   Namespace.Type:Method or Namespace.Type:Method<Nested1,Nested2>  (generic args: nested types of
           Type, or full type names), optionally @THREADSxGROUPS: the launch bounds its CUDA loader gives it
           (PtxKernels.Bound). Default: the TensorCoreLinear RowKernel, Kernel<OneTile>, Kernel<OneTileAhead>,
           Kernel<FourTiles>, TileKernel (mma.sync and wgmma builds) with PtxOps, bounded as TensorCoreLinear loads them.
  --asm    kernel assembly (default src/Tensors/bin/Release/net10.0/LoraEngine.Tensors.dll, from the repository root)
  --out    output folder for NAME.ptx (default ./out)
  --implicit  implicitly grouped entry point (default: explicitly grouped, as LoadKernel)
  --list TYPE  list static methods of TYPE
""";

string asmPath = "src/Tensors/bin/Release/net10.0/LoraEngine.Tensors.dll";
string outDir = "out";
var arch = CudaArchitecture.SM_90;
var isa = CudaInstructionSet.ISA_80;
var opt = OptimizationLevel.O2;
bool implicitGrouping = false;
string? listType = null;
var specs = new List<string>();
for (int i = 0; i < args.Length; i++)
{
    switch (args[i])
    {
        case "--asm": asmPath = args[++i]; break;
        case "--out": outDir = args[++i]; break;
        case "--arch": arch = StaticMember<CudaArchitecture>(args[++i]); break;
        case "--isa": isa = StaticMember<CudaInstructionSet>(args[++i]); break;
        case "--opt": opt = Enum.Parse<OptimizationLevel>(args[++i]); break;
        case "--implicit": implicitGrouping = true; break;
        case "--list": listType = args[++i]; break;
        case "-h": case "--help": Console.WriteLine(Usage); return 0;
        default: specs.Add(args[i]); break;
    }
}
if (specs.Count == 0)
{
    const string T = "LoraEngine.Tensors.Kernels.TensorCoreLinear";
    const string Ptx = "LoraEngine.Tensors.Kernels.PtxOps";
    specs.AddRange([$"{T}:RowKernel<{Ptx},WarpChunks>", $"{T}:RowKernel<{Ptx},WarpGroupChunks>", $"{T}:RowKernel<{Ptx},WideWarpGroupChunks>@256x3", $"{T}:Kernel<OneTile,{Ptx}>", $"{T}:Kernel<OneTileAhead,{Ptx}>", $"{T}:Kernel<FourTiles,{Ptx}>", $"{T}:TileKernel<{Ptx},WarpTileChunks>@256x2", $"{T}:TileKernel<{Ptx},WarpGroupTileChunks>@256x2"]);
}

var asm = Assembly.LoadFrom(Path.GetFullPath(asmPath));
const BindingFlags All = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Static;
if (listType != null)
{
    foreach (var m in asm.GetType(listType, true)!.GetMethods(All | BindingFlags.DeclaredOnly)) Console.WriteLine(m);
    return 0;
}

// Same context flags as ComputeDevice.CreateCuda (Cuda + algorithms + O2); Cuda() finds no device here, which is fine:
// the backend is built directly for the requested architecture / ISA.
using var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(opt));
using var backend = new PTXBackend(context, arch, isa, null!);
Directory.CreateDirectory(outDir);
int failures = 0;
foreach (var spec in specs)
{
    try
    {
        int at = spec.IndexOf('@');
        string kernel = at < 0 ? spec : spec[..at];
        int[]? bounds = at < 0 ? null : spec[(at + 1)..].Split('x').Select(int.Parse).ToArray();
        var (typeName, rest) = (kernel[..kernel.IndexOf(':')], kernel[(kernel.IndexOf(':') + 1)..]);
        var type = asm.GetType(typeName, true)!;
        string methodName = rest;
        Type[] targs = [];
        int lt = rest.IndexOf('<');
        if (lt >= 0)
        {
            methodName = rest[..lt];
            targs = rest[(lt + 1)..^1].Split(',', StringSplitOptions.TrimEntries)
                .Select(n => type.GetNestedType(n, BindingFlags.Public | BindingFlags.NonPublic) ?? Type.GetType(n) ?? asm.GetType(n, true)!)
                .ToArray();
        }
        var method = type.GetMethods(All).Single(m => m.Name == methodName && m.GetGenericArguments().Length == targs.Length);
        if (targs.Length > 0) method = method.MakeGenericMethod(targs);
        var entry = implicitGrouping
            ? EntryPointDescription.FromImplicitlyGroupedKernel(method)
            : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        var sw = System.Diagnostics.Stopwatch.StartNew();
        var compiled = (PTXCompiledKernel)backend.Compile(entry, KernelSpecialization.Empty);
        string file = Path.Combine(outDir, SafeName(type.Name + "." + rest) + ".ptx");
        // The assembly's own PTX rewrite and launch bounds, where it has them (what its CUDA loader hands the driver).
        var loader = asm.GetType("LoraEngine.Tensors.Kernels.PtxKernels");
        var rewrite = loader?.GetMethod("PromoteScalarLocals", All);
        string text = rewrite is null ? compiled.PTXAssembly : (string)rewrite.Invoke(null, [compiled.PTXAssembly])!;
        if (bounds != null)
            text = (string)(loader?.GetMethod("Bound", All) ?? throw new InvalidOperationException("the assembly has no PtxKernels.Bound"))
                .Invoke(null, [text, bounds[0], bounds[1]])!;
        File.WriteAllText(file, text);
        Console.WriteLine($"{spec} -> {file} ({compiled.PTXAssembly.Length} chars, {sw.ElapsedMilliseconds} ms)");
    }
    catch (Exception e)
    {
        failures++;
        Console.Error.WriteLine($"{spec}: {e}");
    }
}
return failures == 0 ? 0 : 1;

static string SafeName(string s) => new string(s.Select(ch => char.IsLetterOrDigit(ch) || ch == '.' || ch == '_' ? ch : '_').ToArray()).Trim('_');

static T StaticMember<T>(string name)
{
    const BindingFlags F = BindingFlags.Public | BindingFlags.Static;
    object? v = typeof(T).GetField(name, F)?.GetValue(null) ?? typeof(T).GetProperty(name, F)?.GetValue(null);
    return v is T t ? t : throw new ArgumentException($"{typeof(T).Name} has no member {name}");
}
