using System.Reflection;
using System.Text.RegularExpressions;
using ILGPU;
using ILGPU.Backends;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Loads a kernel through ILGPU's backend with its PTX rewritten before the driver sees it. Why: inline PTX with
/// several outputs (<c>CudaAsm.EmitRef</c>, the MMA's four accumulators) passes each operand through a 4-byte
/// <c>.local</c> variable of its own, which ptxas normally keeps in registers — but not in a kernel that also issues
/// <c>cp.async</c> (ptxas 11.8 and 12 alike: a 1256-byte stack frame in the row kernel, 0 without the copies). Each such
/// variable is only ever loaded and stored whole through one address register, so it is a register in all but name:
/// <see cref="PromoteScalarLocals"/> makes it one. <see cref="Bound"/> gives an entry CUDA's launch bounds, which ILGPU
/// has no attribute for.
/// </summary>
internal static class PtxKernels
{
    /// <summary>
    /// Compiles <paramref name="kernel"/> (a static, explicitly grouped kernel) for <paramref name="device"/>'s accelerator,
    /// rewrites its PTX with <see cref="PromoteScalarLocals"/> where the accelerator runs PTX (and, on Hopper, its
    /// <see cref="GridDependencyWaitMarker"/> as the instruction, the kernel then counted in
    /// <see cref="ComputeDevice.ProgrammaticFunctions"/>), and returns its launcher. Elsewhere the kernel loads unchanged.
    /// </summary>
    /// <param name="device">The device to load the kernel on.</param>
    /// <param name="kernel">The kernel method.</param>
    /// <param name="groupSize">With <paramref name="groupsPerSM"/>: the only group size it is launched with.</param>
    /// <param name="groupsPerSM">When positive, ptxas is asked to fit this many groups of <paramref name="groupSize"/> threads on an SM (<see cref="Bound"/>).</param>
    /// <param name="sm90a">Retarget the PTX to <c>sm_90a</c> (PTX ISA 8.0), which <c>wgmma</c> needs and ILGPU does not write.</param>
    public static TLauncher Load<TLauncher>(ComputeDevice device, Delegate kernel, int groupSize = 0, int groupsPerSM = 0, bool sm90a = false) where TLauncher : Delegate
    {
        var acc = device.Accelerator;
        var compiled = acc.GetBackend().Compile(EntryPointDescription.FromExplicitlyGroupedKernel(kernel.Method), new KernelSpecialization());
        bool programmatic = false;
        if (compiled is PTXCompiledKernel ptx)
        {
            var text = PromoteScalarLocals(ptx.PTXAssembly);
            if (sm90a) text = ToSm90a(text);
            if (acc is CudaAccelerator { Architecture.Major: >= 9 } && text.Contains(GridDependencyWaitMarker))
            {
                text = WithGridDependencyWait(text);
                programmatic = true;
            }
            compiled = WithPtx(acc.Context, ptx, groupsPerSM > 0 ? Bound(text, groupSize, groupsPerSM) : text);
        }
        var loaded = acc.LoadKernel(compiled);
        if (programmatic && loaded is CudaKernel cuda) device.ProgrammaticFunctions[cuda.FunctionPtr] = true;
        return loaded.CreateLauncherDelegate<TLauncher>();
    }

    /// <summary>
    /// What a kernel emits where it waits for the kernels its launch depends on (<see cref="ITensorCoreOps.WaitForPrerequisites"/>):
    /// a PTX comment, which <see cref="Load"/> makes <c>griddepcontrol.wait</c> on Hopper and later and leaves a comment
    /// elsewhere (the instruction needs sm_90).
    /// </summary>
    public const string GridDependencyWaitMarker = "// loraengine: griddepcontrol.wait";

    /// <summary>The PTX with its marker as <c>griddepcontrol.wait</c>, for at least sm_90 and PTX ISA 7.8.</summary>
    public static string WithGridDependencyWait(string ptx)
    {
        ptx = ptx.Replace(GridDependencyWaitMarker, "griddepcontrol.wait;");
        ptx = Regex.Replace(ptx, @"\.target sm_(\d+)(a?)", m => int.Parse(m.Groups[1].Value) >= 90 ? m.Value : ".target sm_90");
        return WithVersionAtLeast(ptx, 7, 8);
    }

    /// <summary>The PTX with its <c>.version</c> raised to <paramref name="major"/>.<paramref name="minor"/> where it is lower.</summary>
    static string WithVersionAtLeast(string ptx, int major, int minor) =>
        Regex.Replace(ptx, @"\.version (\d+)\.(\d+)", m => (int.Parse(m.Groups[1].Value), int.Parse(m.Groups[2].Value)).CompareTo((major, minor)) >= 0
            ? m.Value : $".version {major}.{minor}");

    /// <summary>The PTX with <c>.target sm_90a</c> and at least <c>.version 8.0</c>.</summary>
    static string ToSm90a(string ptx)
    {
        ptx = Regex.Replace(ptx, @"\.target sm_\d+a?", ".target sm_90a");
        return WithVersionAtLeast(ptx, 8, 0);
    }

    static readonly Regex EntryBody = new(@"(\.entry [^(]*\([^)]*\))\s*\n\{", RegexOptions.Singleline);

    /// <summary>
    /// The entry with <c>.maxntid groupSize, 1, 1</c> and <c>.minnctapersm groupsPerSM</c> (CUDA's __launch_bounds__):
    /// ptxas then keeps its registers within what that many groups leave each thread (the tile kernel: 140 → 128, two
    /// groups of 8 warps per SM instead of one, no spills).
    /// </summary>
    public static string Bound(string ptx, int groupSize, int groupsPerSM)
    {
        var entry = EntryBody.Match(ptx);
        if (!entry.Success) throw new InvalidOperationException("PTX without an entry: cannot bound its launch");
        return ptx.Remove(entry.Index, entry.Length).Insert(entry.Index, $"{entry.Groups[1].Value}\n.maxntid {groupSize}, 1, 1\n.minnctapersm {groupsPerSM}\n{{");
    }

    /// <summary>The same compiled kernel with other PTX text (ILGPU 1.5.3 keeps the constructor and entry point internal).</summary>
    static PTXCompiledKernel WithPtx(Context context, PTXCompiledKernel compiled, string ptx)
    {
        const BindingFlags Any = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance;
        var entry = typeof(CompiledKernel).GetProperty("EntryPoint", Any)!.GetValue(compiled);
        var info = typeof(CompiledKernel).GetProperty("Info", Any)!.GetValue(compiled);
        var constructor = typeof(PTXCompiledKernel).GetConstructors(Any).Single(c => c.GetParameters().Length == 4);
        return (PTXCompiledKernel)constructor.Invoke([context, entry, info, ptx]);
    }

    static readonly Regex Declaration = new(@"^\s*\.local \.align \d+ \.b8 (__local_depot\d+)\[4\];\s*\n", RegexOptions.Multiline);
    static readonly Regex AddressOf = new(@"^\s*mov\.[bu]64\s+(%rd\d+), (__local_depot\d+);\s*\n", RegexOptions.Multiline);
    static readonly Regex Load32 = new(@"^(\s*)ld\.local\.[bfsu]32\s+(%\w+), \[(%rd\d+)\];", RegexOptions.Multiline);
    static readonly Regex Store32 = new(@"^(\s*)st\.local\.[bfsu]32\s+\[(%rd\d+)\], ([^;]+);", RegexOptions.Multiline);
    static readonly Regex Register64 = new(@"%rd\d+\b");

    /// <summary>
    /// Replaces every 4-byte <c>.local</c> variable whose address register (set once, by <c>mov.b64 %rdN,
    /// __local_depotK;</c>) is used by nothing but whole 32-bit <c>ld.local</c> / <c>st.local</c> through that register,
    /// with a <c>.b32</c> register (<c>%lp0</c>, <c>%lp1</c>, …): loads and stores become <c>mov.b32</c>. Any other
    /// use of the address (an offset, a wider access, a second definition) leaves that variable as it was. PTX with
    /// functions besides the entry comes back unchanged (the registers are declared in the entry's body).
    /// </summary>
    public static string PromoteScalarLocals(string ptx)
    {
        if (ptx.Contains(".func")) return ptx;
        var scalar = Declaration.Matches(ptx).Select(m => m.Groups[1].Value).ToHashSet();
        var definitions = new Dictionary<string, List<string>>();
        foreach (Match m in AddressOf.Matches(ptx))
            if (scalar.Contains(m.Groups[2].Value))
                (definitions.TryGetValue(m.Groups[1].Value, out var list) ? list : definitions[m.Groups[1].Value] = []).Add(m.Groups[2].Value);

        var uses = new Dictionary<string, int>();
        foreach (Match m in Register64.Matches(ptx)) uses[m.Value] = uses.GetValueOrDefault(m.Value) + 1;
        var accesses = new Dictionary<string, int>();
        foreach (Match m in Load32.Matches(ptx)) accesses[m.Groups[3].Value] = accesses.GetValueOrDefault(m.Groups[3].Value) + 1;
        foreach (Match m in Store32.Matches(ptx)) accesses[m.Groups[2].Value] = accesses.GetValueOrDefault(m.Groups[2].Value) + 1;

        // An address register qualifies when its one definition and its whole-variable accesses are all its uses.
        var promoted = new Dictionary<string, int>();
        var variables = new HashSet<string>();
        foreach (var (address, depots) in definitions)
        {
            if (depots.Count != 1 || uses[address] != 1 + accesses.GetValueOrDefault(address)) continue;
            promoted[address] = promoted.Count;
            variables.Add(depots[0]);
        }
        if (promoted.Count == 0) return ptx;

        ptx = Load32.Replace(ptx, m => promoted.TryGetValue(m.Groups[3].Value, out int r) ? $"{m.Groups[1].Value}mov.b32\t{m.Groups[2].Value}, %lp{r};" : m.Value);
        ptx = Store32.Replace(ptx, m => promoted.TryGetValue(m.Groups[2].Value, out int r) ? $"{m.Groups[1].Value}mov.b32\t%lp{r}, {m.Groups[3].Value};" : m.Value);
        ptx = AddressOf.Replace(ptx, m => promoted.ContainsKey(m.Groups[1].Value) ? "" : m.Value);
        ptx = Declaration.Replace(ptx, m => variables.Contains(m.Groups[1].Value) ? "" : m.Value);

        // The registers are declared at the top of the entry's body (its first line that is only "{").
        var body = new Regex(@"^\{\s*$", RegexOptions.Multiline).Match(ptx);
        if (!body.Success) throw new InvalidOperationException("PTX without an entry body: cannot declare the promoted registers");
        return ptx.Insert(body.Index + body.Length, $"\n\t.reg .b32 %lp<{promoted.Count}>;");
    }
}
