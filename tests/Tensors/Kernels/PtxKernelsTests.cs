using System.Reflection;
using ILGPU;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using LoraEngine.Tensors.Kernels;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class PtxKernelsTests
{
    const string Entry = """
        .version 8.0
        .target sm_90
        .address_size 64

        .visible .entry Kernel_K(
        	.param .u64 p
        )
        {
        	.local .align 4 .b8 __local_depot0[4];
        	.local .align 4 .b8 __local_depot1[4];
        	.reg .f32 %f<4>;
        	.reg .b64 %rd<4>;
        	mov.b64	%rd1, __local_depot0;
        	mov.b64	%rd2, __local_depot1;
        	st.local.f32	[%rd1], 0f00000000;
        	ld.local.f32	%f1, [%rd1];
        	add.f32	%f2, %f1, %f1;
        	st.local.f32	[%rd1], %f2;
        	st.local.f32	[%rd2], %f2;
        	ld.local.f32	%f3, [%rd2+0];
        	ret;
        }
        """;

    [Fact]
    public void A_local_used_only_whole_through_its_address_becomes_a_register_and_one_used_otherwise_stays()
    {
        var ptx = PtxKernels.PromoteScalarLocals(Entry);

        Assert.Contains("\t.reg .b32 %lp<1>;", ptx);
        Assert.DoesNotContain("__local_depot0", ptx);
        Assert.Contains("mov.b32\t%lp0, 0f00000000;", ptx);
        Assert.Contains("mov.b32\t%f1, %lp0;", ptx);
        Assert.Contains("mov.b32\t%lp0, %f2;", ptx);
        // depot1's address is also used with an offset: untouched.
        Assert.Contains(".local .align 4 .b8 __local_depot1[4];", ptx);
        Assert.Contains("mov.b64\t%rd2, __local_depot1;", ptx);
        Assert.Contains("st.local.f32\t[%rd2], %f2;", ptx);
    }

    [Fact]
    public void A_bound_entry_carries_its_group_size_and_groups_per_SM_before_its_body()
    {
        var ptx = PtxKernels.Bound(Entry, 256, 2);

        Assert.Contains("\t.param .u64 p\n)\n.maxntid 256, 1, 1\n.minnctapersm 2\n{\n", ptx);
        Assert.Equal(Entry.Length + ".maxntid 256, 1, 1\n.minnctapersm 2\n".Length, ptx.Length);
    }

    [Theory]
    [InlineData(".version 7.0\n.target sm_80\n", ".version 7.8\n.target sm_90\n")]
    [InlineData(".version 8.0\n.target sm_80\n", ".version 8.0\n.target sm_90\n")]
    [InlineData(".version 8.0\n.target sm_90a\n", ".version 8.0\n.target sm_90a\n")]
    public void The_grid_dependency_marker_becomes_the_instruction_on_at_least_sm_90_and_PTX_7_8(string header, string expected)
    {
        var body = $"\t{PtxKernels.GridDependencyWaitMarker}\n\tret;\n";

        Assert.Equal(expected + "\tgriddepcontrol.wait;\n\tret;\n", PtxKernels.WithGridDependencyWait(header + body));
    }

    [Fact]
    public void Every_split_k_kernel_reads_only_weights_before_its_grid_dependency_wait()
    {
        // What a programmatic launch may do before the kernels ahead of it have finished (DeviceGraph.MakeProgrammatic):
        // no load but the weights' L2 prefetches, no store, exactly one wait.
        foreach (var ptx in TensorCoreKernelsPtx().Where(k => k.Name == "Kernel").Select(k => k.Ptx))
        {
            Assert.Single(ptx.Split('\n'), l => l.Trim() == PtxKernels.GridDependencyWaitMarker);
            var before = LinesBeforeTheWait(ptx);
            Assert.Contains(before, l => l.StartsWith("prefetch.global.L2", StringComparison.Ordinal));
            Assert.DoesNotContain(before, ReadsOrWritesGlobal);
        }
    }

    [Fact]
    public void The_row_and_tile_kernels_are_never_launched_programmatically()
    {
        // Their edges stay whole (no marker, so PtxKernels.Load never lists them): programmatic launches of them made the
        // bs32 decode step slower on the H100 (2.76 → 2.81 ms), where the split-k kernels' made bs1's faster (1.76 → 1.68).
        foreach (var ptx in TensorCoreKernelsPtx().Where(k => k.Name != "Kernel").Select(k => k.Ptx))
            Assert.DoesNotContain(PtxKernels.GridDependencyWaitMarker, ptx);
    }

    /// <summary>A load other than a parameter's, a local's or shared memory's; a store other than a local's or shared memory's; an atomic.</summary>
    static bool ReadsOrWritesGlobal(string line) =>
        System.Text.RegularExpressions.Regex.IsMatch(line, @"^(ld\.(?!param|local|shared|const)|st\.(?!local|shared)|atom\.|red\.)");

    [Fact]
    public void The_walk_before_the_wait_follows_branches_not_the_text()
    {
        // ILGPU puts a conditional block after the rest: the load at L_1 runs before the wait though it is written after.
        var ptx = $".entry K()\n{{\n\t@%p1 bra L_1;\nL_2:\n\t{PtxKernels.GridDependencyWaitMarker}\n\tret;\nL_1:\n\tld.global.f32 %f1, [%rd1];\n\tbra.uni L_2;\n}}\n";

        Assert.Contains("ld.global.f32 %f1, [%rd1];", LinesBeforeTheWait(ptx));
    }

    /// <summary>
    /// Every instruction some path from the entry reaches before the grid dependency wait: the entry's body cut into
    /// blocks at its labels, each followed to its branches' targets and, unless it ends in an unconditional branch or
    /// ret, to the next block; a walk stops at the wait.
    /// </summary>
    static HashSet<string> LinesBeforeTheWait(string ptx)
    {
        var lines = ptx[(ptx.IndexOf("\n{", StringComparison.Ordinal) + 2)..].Split('\n').Select(l => l.Trim()).ToArray();
        var labels = new Dictionary<string, int>();
        for (int i = 0; i < lines.Length; i++)
            if (lines[i].EndsWith(':')) labels[lines[i][..^1]] = i;
        var seen = new HashSet<string>();
        var visited = new HashSet<int>();
        var work = new Stack<int>([0]);
        while (work.Count > 0)
        {
            for (int i = work.Pop(); i < lines.Length && visited.Add(i); i++)
            {
                var line = lines[i];
                if (line == PtxKernels.GridDependencyWaitMarker || line.StartsWith("ret", StringComparison.Ordinal) || line == "}") break;
                seen.Add(line);
                var branch = System.Text.RegularExpressions.Regex.Match(line, @"^(@!?%p\d+\s+)?bra(\.uni)?\s+(\w+);");
                if (!branch.Success) continue;
                work.Push(labels[branch.Groups[3].Value]);
                if (!branch.Groups[1].Success) break; // unconditional: no fall-through
            }
        }
        return seen;
    }

    /// <summary>The PTX ILGPU writes for each tensor-core kernel's CUDA build (sm_90, as ptxcheck does without a GPU).</summary>
    static IEnumerable<(string Name, string Ptx)> TensorCoreKernelsPtx()
    {
        using var context = Context.Create(b => b.Cuda().EnableAlgorithms().Optimize(OptimizationLevel.O2));
        using var backend = new PTXBackend(context, CudaArchitecture.SM_90, CudaInstructionSet.ISA_80, null!);
        var linear = typeof(TensorCoreLinear);
        Type Nested(string name) => linear.GetNestedType(name, BindingFlags.NonPublic | BindingFlags.Public)!;
        var ops = typeof(PtxOps);
        (string Method, Type[] Args)[] kernels =
        [
            ("Kernel", [Nested("OneTile"), ops]), ("Kernel", [Nested("OneTileAhead"), ops]), ("Kernel", [Nested("FourTiles"), ops]),
            ("RowKernel", [ops, Nested("WarpChunks")]), ("RowKernel", [ops, Nested("WarpGroupChunks")]), ("RowKernel", [ops, Nested("WideWarpGroupChunks")]),
            ("TileKernel", [ops, Nested("WarpTileChunks")]), ("TileKernel", [ops, Nested("WarpGroupTileChunks")]),
        ];
        var list = new List<(string, string)>();
        foreach (var (name, args) in kernels)
        {
            var method = linear.GetMethods(BindingFlags.NonPublic | BindingFlags.Static)
                .Single(m => m.Name == name && m.GetGenericArguments().Length == args.Length).MakeGenericMethod(args);
            list.Add((name, ((PTXCompiledKernel)backend.Compile(EntryPointDescription.FromExplicitlyGroupedKernel(method), KernelSpecialization.Empty)).PTXAssembly));
        }
        return list;
    }

    [Fact]
    public void PTX_with_functions_besides_the_entry_comes_back_unchanged() =>
        Assert.Equal(Entry + "\n.func F()\n{\n\tret;\n}\n", PtxKernels.PromoteScalarLocals(Entry + "\n.func F()\n{\n\tret;\n}\n"));
}
