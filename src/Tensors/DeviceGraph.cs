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

    DeviceGraph(ComputeDevice device, IntPtr graph, IntPtr exec, int nodes)
    {
        _device = device;
        _graph = graph;
        _exec = exec;
        Nodes = nodes;
    }

    /// <summary>Kernels and copies in the graph.</summary>
    public int Nodes { get; }

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
            Driver.Check(Driver.cuGraphInstantiateWithFlags(out IntPtr exec, graph, 0), "cuGraphInstantiate");
            return new DeviceGraph(device, graph, exec, (int)count);
        }
        catch
        {
            Driver.cuGraphDestroy(graph);
            throw;
        }
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

        public static void Check(int result, string call)
        {
            if (result != 0) throw new InvalidOperationException($"{call} failed with CUresult {result}");
        }
    }
}
