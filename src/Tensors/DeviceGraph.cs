using System.Runtime.InteropServices;
using ILGPU.Runtime.Cuda;

namespace LoraEngine.Tensors;

/// <summary>
/// A CUDA graph: the kernel launches and copies queued on the device's stream between <see cref="Capture"/>'s start and
/// end, recorded once and replayed with one <see cref="Launch"/> (about 1 µs a kernel instead of ~4 eagerly). Arguments
/// are frozen at capture — buffer addresses, scalars, grid sizes — so what is replayed must read its inputs from
/// buffers whose contents the caller updates before each launch. Recording launches nothing.
/// </summary>
public sealed class DeviceGraph : IDisposable
{
    readonly ComputeDevice _device;
    IntPtr _graph, _exec;

    DeviceGraph(ComputeDevice device, IntPtr graph, IntPtr exec, int nodes, int programmaticEdges)
    {
        _device = device;
        _graph = graph;
        _exec = exec;
        Nodes = nodes;
        ProgrammaticEdges = programmaticEdges;
    }

    /// <summary>Kernels and copies in the graph.</summary>
    public int Nodes { get; }

    /// <summary>
    /// Edges from one kernel into the next made programmatic (<see cref="MakeProgrammatic"/>): that many kernels start
    /// before the kernel ahead of them has finished and wait for it inside.
    /// </summary>
    public int ProgrammaticEdges { get; }

    /// <summary>Whether <paramref name="device"/> can capture graphs (CUDA only).</summary>
    public static bool IsSupported(ComputeDevice device) => device.Kind == DeviceKind.Cuda;

    /// <summary>Records everything <paramref name="record"/> queues on the device's stream; nothing runs.</summary>
    public static DeviceGraph Capture(ComputeDevice device, Action record)
    {
        if (!IsSupported(device)) throw new NotSupportedException($"CUDA graphs need a CUDA device, not {device.Kind}");
        IntPtr stream = StreamOf(device);
        Driver.Check(Driver.cuStreamBeginCapture_v2(stream, Driver.CaptureModeRelaxed), "cuStreamBeginCapture");
        IntPtr graph;
        try
        {
            record();
        }
        finally
        {
            // Ending the capture is required even when recording failed, or the stream stays unusable.
            int end = Driver.cuStreamEndCapture(stream, out graph);
            if (end != 0 && graph != IntPtr.Zero) Driver.cuGraphDestroy(graph);
            Driver.Check(end, "cuStreamEndCapture");
        }
        try
        {
            UIntPtr count = 0;
            Driver.Check(Driver.cuGraphGetNodes(graph, IntPtr.Zero, ref count), "cuGraphGetNodes");
            int programmatic = MakeProgrammatic(graph, device);
            Driver.Check(Driver.cuGraphInstantiateWithFlags(out IntPtr exec, graph, 0), "cuGraphInstantiate");
            return new DeviceGraph(device, graph, exec, (int)count, programmatic);
        }
        catch
        {
            Driver.cuGraphDestroy(graph);
            throw;
        }
    }

    /// <summary>
    /// Hopper's programmatic dependent launch, applied to a recorded graph: each edge from a kernel into a kernel that waits
    /// for its prerequisites itself (<see cref="ComputeDevice.ProgrammaticFunctions"/>: the split-k tensor-core linears of
    /// up to 8 tokens, whose <c>griddepcontrol.wait</c> comes after their first weights' L2 prefetches and before anything
    /// else) becomes programmatic by the launch-order port: that kernel starts once every block of the one ahead of it
    /// has begun, so its weights stream while that one runs (bs1 decode step 1.76 → 1.68 ms on the H100; the port that
    /// waits for the blocks to exit gained nothing). Every other edge stays whole. Returns how many edges changed; 0 where
    /// the driver predates edge data (CUDA 12.3) or refuses the edges, which only costs the overlap (the log line of each
    /// decode graph counts them).
    /// </summary>
    static int MakeProgrammatic(IntPtr graph, ComputeDevice device)
    {
        if (device.ProgrammaticFunctions.IsEmpty) return 0;
        try
        {
            UIntPtr count = 0;
            Driver.Check(Driver.cuGraphGetEdges_v2(graph, null, null, null, ref count), "cuGraphGetEdges");
            var from = new IntPtr[(int)count];
            var to = new IntPtr[(int)count];
            var data = new Driver.EdgeData[(int)count];
            Driver.Check(Driver.cuGraphGetEdges_v2(graph, from, to, data, ref count), "cuGraphGetEdges");
            var (fromKernels, toKernels) = (new List<IntPtr>(), new List<IntPtr>());
            for (int i = 0; i < (int)count; i++)
                if (data[i].Type == Driver.DependencyDefault && IsKernel(from[i], out _)
                    && IsKernel(to[i], out var function) && device.ProgrammaticFunctions.ContainsKey(function))
                {
                    fromKernels.Add(from[i]);
                    toKernels.Add(to[i]);
                }
            if (fromKernels.Count == 0) return 0;
            IntPtr[] f = [.. fromKernels], t = [.. toKernels];
            var whole = new Driver.EdgeData[f.Length];
            var programmatic = Enumerable.Repeat(new Driver.EdgeData { FromPort = Driver.PortLaunchOrder, Type = Driver.DependencyProgrammatic }, f.Length).ToArray();
            Driver.Check(Driver.cuGraphRemoveDependencies_v2(graph, f, t, whole, (UIntPtr)f.Length), "cuGraphRemoveDependencies");
            if (Driver.cuGraphAddDependencies_v2(graph, f, t, programmatic, (UIntPtr)f.Length) == 0) return f.Length;
            // A driver that refuses these edges gets the whole ones back: the graph as captured.
            Driver.Check(Driver.cuGraphAddDependencies_v2(graph, f, t, whole, (UIntPtr)f.Length), "cuGraphAddDependencies");
            return 0;
        }
        catch (EntryPointNotFoundException)
        {
            return 0;
        }
    }

    /// <summary>Whether <paramref name="node"/> is a kernel, and its <c>CUfunction</c>.</summary>
    static bool IsKernel(IntPtr node, out IntPtr function)
    {
        function = IntPtr.Zero;
        Driver.Check(Driver.cuGraphNodeGetType(node, out int type), "cuGraphNodeGetType");
        if (type != Driver.NodeKernel) return false;
        var parameters = new byte[Driver.KernelNodeParamsBytes];
        Driver.Check(Driver.cuGraphKernelNodeGetParams_v2(node, parameters), "cuGraphKernelNodeGetParams");
        function = (IntPtr)BitConverter.ToInt64(parameters, 0); // CUDA_KERNEL_NODE_PARAMS_v2.func comes first
        return true;
    }

    /// <summary>Queues the whole graph on the device's stream.</summary>
    public void Launch()
    {
        ObjectDisposedException.ThrowIf(_exec == IntPtr.Zero, this);
        Driver.Check(Driver.cuGraphLaunch(_exec, StreamOf(_device)), "cuGraphLaunch");
    }

    static IntPtr StreamOf(ComputeDevice device) => ((CudaStream)device.Stream).StreamPtr;

    /// <summary>Destroys the graph and its executable; the buffers it reads are the caller's. Idempotent.</summary>
    public void Dispose()
    {
        if (_exec != IntPtr.Zero) Driver.cuGraphExecDestroy(_exec);
        if (_graph != IntPtr.Zero) Driver.cuGraphDestroy(_graph);
        _exec = _graph = IntPtr.Zero;
    }

    /// <summary>The few CUDA driver calls ILGPU does not wrap.</summary>
    static class Driver
    {
        const string Lib = "libcuda.so.1";

        /// <summary>CU_STREAM_CAPTURE_MODE_RELAXED: what the ILGPU probe was checked with (gpu_notes.md).</summary>
        public const int CaptureModeRelaxed = 2;

        [DllImport(Lib)] public static extern int cuStreamBeginCapture_v2(IntPtr stream, int mode);
        [DllImport(Lib)] public static extern int cuStreamEndCapture(IntPtr stream, out IntPtr graph);
        [DllImport(Lib)] public static extern int cuGraphInstantiateWithFlags(out IntPtr exec, IntPtr graph, ulong flags);
        [DllImport(Lib)] public static extern int cuGraphLaunch(IntPtr exec, IntPtr stream);
        [DllImport(Lib)] public static extern int cuGraphGetNodes(IntPtr graph, IntPtr nodes, ref UIntPtr count);
        [DllImport(Lib)] public static extern int cuGraphExecDestroy(IntPtr exec);
        [DllImport(Lib)] public static extern int cuGraphDestroy(IntPtr graph);
        [DllImport(Lib)] public static extern int cuGraphGetEdges_v2(IntPtr graph, IntPtr[]? from, IntPtr[]? to, EdgeData[]? edgeData, ref UIntPtr count);
        [DllImport(Lib)] public static extern int cuGraphRemoveDependencies_v2(IntPtr graph, IntPtr[] from, IntPtr[] to, EdgeData[] edgeData, UIntPtr count);
        [DllImport(Lib)] public static extern int cuGraphAddDependencies_v2(IntPtr graph, IntPtr[] from, IntPtr[] to, EdgeData[] edgeData, UIntPtr count);
        [DllImport(Lib)] public static extern int cuGraphNodeGetType(IntPtr node, out int type);
        [DllImport(Lib)] public static extern int cuGraphKernelNodeGetParams_v2(IntPtr node, byte[] parameters);

        /// <summary>CUgraphEdgeData (CUDA 12.3): the ports the edge leaves and enters by and its type; 8 bytes.</summary>
        [StructLayout(LayoutKind.Sequential, Size = 8)]
        public struct EdgeData
        {
            public byte FromPort, ToPort, Type;
        }

        public const int NodeKernel = 0;              // CU_GRAPH_NODE_TYPE_KERNEL
        public const byte DependencyDefault = 0;      // CU_GRAPH_DEPENDENCY_TYPE_DEFAULT
        public const byte DependencyProgrammatic = 1; // CU_GRAPH_DEPENDENCY_TYPE_PROGRAMMATIC
        public const byte PortLaunchOrder = 2;        // CU_GRAPH_KERNEL_NODE_PORT_LAUNCH_ORDER: every block begun
        public const int KernelNodeParamsBytes = 128; // ≥ sizeof(CUDA_KERNEL_NODE_PARAMS_v2), 72 on 64-bit

        public static void Check(int result, string call)
        {
            if (result != 0) throw new InvalidOperationException($"{call} failed with CUresult {result}");
        }
    }
}
