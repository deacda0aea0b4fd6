using System.Diagnostics;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Bench.Tensors;

/// <summary>One measured linear: y[tokens, out] = W[out, in] · x, and its bandwidth against a same-size device copy.</summary>
public sealed record LinearResult(int Out, int In, DType WType, int Tokens, double Ms, double WeightGBps, double CopyGBps)
{
    /// <summary>Weight bytes streamed per second over copy bandwidth (bytes read + written per second).</summary>
    public double RatioToCopy => WeightGBps / CopyGBps;
}

/// <summary>
/// Times the linear kernels at 4096×4096 and 2048×8192 (out × in), F32 and BF16 weights, 1 and 32 tokens, with a
/// device-to-device copy of the weight's size measured in the same run as the bandwidth limit. Warm-up excluded;
/// the median of several timed repetitions is reported.
/// </summary>
public static class LinearBench
{
    public static readonly (int Out, int In)[] Shapes = [(4096, 4096), (2048, 8192)];

    public static IReadOnlyList<LinearResult> Run(ComputeDevice device, bool quick, TextWriter log)
    {
        var results = new List<LinearResult>();
        var shapes = quick ? Shapes.Take(1).Select(s => (s.Out / 4, s.In / 4)).ToArray() : Shapes;
        foreach (var (outF, inF) in shapes)
            foreach (var dtype in new[] { DType.F32, DType.BF16 })
            {
                using var w = RandomWeight(device, dtype, outF, inF);
                double copy = CopyGBps(device, w.SizeInBytes, quick);
                foreach (int tokens in new[] { 1, 32 })
                {
                    using var x = device.Upload(RandomFloats(tokens * inF, 1), tokens, inF);
                    using var y = device.Allocate(DType.F32, tokens, outF);
                    double ms = MedianMs(device, () => device.MatMul.Linear(y, x, w), quick);
                    var r = new LinearResult(outF, inF, dtype, tokens, ms, w.SizeInBytes / (ms * 1e6), copy);
                    results.Add(r);
                    log.WriteLine($"linear {outF}x{inF} {dtype,-4} tokens {tokens,2}: {ms,8:F3} ms  {r.WeightGBps,7:F1} GB/s  copy {copy,7:F1} GB/s  ratio {r.RatioToCopy:F2}");
                }
            }
        return results;
    }

    /// <summary>BF16 linears of the served shapes (out × in, q/k/v and gate/up merged as the model runs them): Llama-3.2-1B, then Llama-3.1-8B.</summary>
    public static readonly (string Name, int Out, int In)[] ModelShapes =
    [
        ("1b qkv", 3072, 2048), ("1b o", 2048, 2048), ("1b gate/up", 16384, 2048), ("1b down", 2048, 8192), ("1b lm_head", 128256, 2048),
        ("8b qkv", 6144, 4096), ("8b o", 4096, 4096), ("8b gate/up", 28672, 4096), ("8b down", 4096, 14336),
    ];

    /// <summary>Bytes of weights a replayed shape cycles through, so each launch reads its weight from DRAM as a model's step does.</summary>
    const long ColdWeightBytes = 256L << 20;

    /// <summary>
    /// The served shapes at 1 and 32 tokens, each timed as a CUDA graph of back-to-back launches (on a GPU: launch cost
    /// excluded, as in a decode step), against the copy bandwidth of 1 GiB; and 4096×4096 at 2048 tokens in TFLOP/s.
    /// The launches cycle through copies of the weight filling <see cref="ColdWeightBytes"/>: one 8–34 MB weight replayed
    /// alone stays in an H100's 50 MB L2 and hid the DRAM behaviour of the 1B shapes (2026-12-06: a one-token linear change
    /// that slowed the served bs1 step looked neutral here).
    /// </summary>
    /// <param name="tokenCounts">token counts timed per shape (default 1 and 32)</param>
    /// <param name="eachKernel">also time each tensor-core kernel forced in turn (default true)</param>
    public static IReadOnlyList<LinearResult> RunModelShapes(ComputeDevice device, TextWriter log, int[]? tokenCounts = null, bool eachKernel = true)
    {
        var results = new List<LinearResult>();
        double copy = CopyGBps(device, 1L << 30, quick: false);
        foreach (var (name, outF, inF) in ModelShapes)
        {
            long bytes = 2L * outF * inF;
            var ws = RandomWeights(device, DType.BF16, outF, inF, (int)Math.Clamp(ColdWeightBytes / bytes, 1, 32));
            try
            {
                foreach (int tokens in tokenCounts ?? [1, 32])
                {
                    using var x = device.Upload(RandomFloats(tokens * inF, 1), tokens, inF);
                    using var y = device.Allocate(DType.F32, tokens, outF);
                    int next = 0;
                    void Launch() => device.MatMul.Linear(y, x, ws[next++ % ws.Length]);
                    double ms = MedianReplayMs(device, Launch);
                    var r = new LinearResult(outF, inF, DType.BF16, tokens, ms, bytes / (ms * 1e6), copy);
                    results.Add(r);
                    log.WriteLine($"linear {name,-11} {outF}x{inF} tokens {tokens,2}: {ms * 1000,8:F1} µs  {r.WeightGBps,7:F1} GB/s  copy {copy,7:F1} GB/s  ratio {r.RatioToCopy:F2}{(eachKernel ? EachKernel(device, Launch) : "")}");
                }
            }
            finally
            {
                foreach (var w in ws) w.Dispose();
            }
        }
        {
            const int n = 4096, tokens = 2048;
            using var w = RandomWeight(device, DType.BF16, n, n);
            using var x = device.Upload(RandomFloats(tokens * n, 1), tokens, n);
            using var y = device.Allocate(DType.F32, tokens, n);
            void Launch() => device.MatMul.Linear(y, x, w);
            double ms = MedianReplayMs(device, Launch);
            log.WriteLine($"linear 4096x4096 tokens {tokens}: {ms:F3} ms  {2.0 * n * n * tokens / (ms * 1e9):F1} TFLOP/s{(eachKernel ? EachKernel(device, Launch) : "")}");
            results.Add(new LinearResult(n, n, DType.BF16, tokens, ms, w.SizeInBytes / (ms * 1e6), copy));
        }
        return results;
    }

    /// <summary>
    /// One linear launched <paramref name="repeats"/> times eagerly, for a profiler to pick up (`linear OUT IN TOKENS
    /// [KERNEL]`, a name of <see cref="TensorCoreKernels"/>, default auto): the kernels of a shape without the rest of the
    /// benchmark around them (the wgmma kernels on Hopper only).
    /// </summary>
    public static void Profile(ComputeDevice device, int outF, int inF, int tokens, string kernel, int repeats, TextWriter log)
    {
        using var w = RandomWeight(device, DType.BF16, outF, inF);
        using var x = device.Upload(RandomFloats(tokens * inF, 1), tokens, inF);
        using var y = device.Allocate(DType.F32, tokens, outF);
        if (device.MatMul.TensorCores is { } tc)
            tc.Choice = Array.Find(TensorCoreKernels, k => k.Name == kernel) is { Name: not null } named ? named.Kernel : TensorCoreLinear.Kernels.Auto;
        // One launch first: the kernels' JIT (seconds for the tensor-core builds) stays out of the clock.
        device.MatMul.Linear(y, x, w);
        device.Synchronize();
        var clock = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) device.MatMul.Linear(y, x, w);
        device.Synchronize();
        log.WriteLine($"linear {outF}x{inF} tokens {tokens} ({kernel}): {clock.Elapsed.TotalMilliseconds * 1000 / repeats:F1} µs a launch, eager");
    }

    /// <summary>On the tensor cores, the time of each of their kernels forced in turn (the shape picks one of them by default).</summary>
    static string EachKernel(ComputeDevice device, Action action)
    {
        if (device.MatMul.TensorCores is not { } tc) return "";
        try
        {
            var times = new List<string>();
            foreach (var (name, kernel, warpGroup) in TensorCoreKernels)
            {
                if (warpGroup && !tc.HasWarpGroup) continue;
                tc.Choice = kernel;
                times.Add($"{name} {MedianReplayMs(device, action) * 1000:F1} µs");
            }
            return $"  ({string.Join(", ", times)})";
        }
        finally
        {
            tc.Choice = TensorCoreLinear.Kernels.Auto;
        }
    }

    /// <summary>The tensor-core kernels by their command-line names; the wgmma ones need Hopper.</summary>
    static readonly (string Name, TensorCoreLinear.Kernels Kernel, bool WarpGroup)[] TensorCoreKernels =
    [
        ("split-k", TensorCoreLinear.Kernels.SplitK, false), ("split-k-ahead", TensorCoreLinear.Kernels.SplitKAhead, false),
        ("split-rows", TensorCoreLinear.Kernels.SplitRows, false), ("split-slices", TensorCoreLinear.Kernels.SplitSlices, false),
        ("tiles", TensorCoreLinear.Kernels.Tiles, false), ("wgmma-rows", TensorCoreLinear.Kernels.WarpGroupRows, true),
        ("wgmma-slices", TensorCoreLinear.Kernels.WarpGroupSlices, true), ("wide-rows", TensorCoreLinear.Kernels.WideRows, true),
        ("wide-slices", TensorCoreLinear.Kernels.WideSlices, true), ("wgmma-tiles", TensorCoreLinear.Kernels.WarpGroupTiles, true),
    ];

    /// <summary>Median time of one call: 20 calls captured in a CUDA graph and replayed (eager elsewhere).</summary>
    static double MedianReplayMs(ComputeDevice device, Action action)
    {
        const int calls = 20;
        if (!DeviceGraph.IsSupported(device)) return MedianMs(device, action, quick: false);
        action(); // kernels loaded before capture
        device.Synchronize();
        using var graph = DeviceGraph.Capture(device, () =>
        {
            for (int i = 0; i < calls; i++) action();
        });
        return MedianMs(device, graph.Launch, quick: false) / calls;
    }

    /// <summary>
    /// Host cost of one op through the device's own implementation (a kernel launch on a GPU, a host call on the CPU
    /// device): a one-element residual add, called back to back, per call.
    /// </summary>
    public static double LaunchMicroseconds(ComputeDevice device)
    {
        using var x = device.Upload(new float[] { 1 }, 1, 1);
        using var y = device.Upload(new float[] { 0 }, 1, 1);
        return MedianMs(device, () =>
        {
            for (int i = 0; i < 100; i++) device.Elementwise.AddInPlace(x, y);
        }, quick: false) * 1000 / 100;
    }

    static DeviceTensor RandomWeight(ComputeDevice device, DType dtype, int outF, int inF) => RandomWeights(device, dtype, outF, inF, 1)[0];

    /// <summary><paramref name="count"/> device copies of one random weight (the host values are made once).</summary>
    static DeviceTensor[] RandomWeights(ComputeDevice device, DType dtype, int outF, int inF, int count)
    {
        var values = RandomFloats(outF * inF, 0.02f);
        var bits = dtype == DType.F32 ? null : HalfBits.FromFloat(dtype, values);
        var copies = new DeviceTensor[count];
        for (int i = 0; i < count; i++)
            copies[i] = bits is null ? device.Upload(values, outF, inF) : device.Upload<ushort>(bits, dtype, outF, inF);
        return copies;
    }

    internal static float[] RandomFloats(int n, float scale)
    {
        var rnd = new Random(42);
        var a = new float[n];
        for (int i = 0; i < n; i++) a[i] = (float)(rnd.NextDouble() * 2 - 1) * scale;
        return a;
    }

    /// <summary>Copy bandwidth: (bytes read + bytes written) per second for a device-to-device copy of <paramref name="bytes"/>.</summary>
    public static double CopyGBps(ComputeDevice device, long bytes, bool quick)
    {
        int n = (int)(bytes / 4);
        using var src = device.Upload(RandomFloats(n, 1), n);
        using var dst = device.Allocate(DType.F32, n);
        double ms = MedianMs(device, () => dst.CopyFrom(src), quick);
        return 2.0 * n * 4 / (ms * 1e6);
    }

    /// <summary>Median wall time of one call, device synchronised, after warm-up.</summary>
    public static double MedianMs(ComputeDevice device, Action action, bool quick)
    {
        for (int i = 0; i < 3; i++) action();
        device.Synchronize();
        int reps = quick ? 5 : 25, inner = device.IsCpu ? 1 : 10;
        var times = new double[reps];
        for (int r = 0; r < reps; r++)
        {
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < inner; i++) action();
            device.Synchronize();
            times[r] = sw.Elapsed.TotalMilliseconds / inner;
        }
        Array.Sort(times);
        return times[reps / 2];
    }
}
