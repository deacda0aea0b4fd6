using LoraEngine.Tensors;

namespace LoraEngine.Bench.Tensors;

/// <summary>One measured decode attention: every token of the batch at the same context, one call per layer.</summary>
/// <param name="Kernel">"wide" (one group per (token, head)), "split" (split context + combine) or "host" (the CPU device)</param>
/// <param name="Us">microseconds per call (one layer)</param>
/// <param name="KvGBps">K and V bytes the call must read, per second</param>
/// <param name="CopyGBps">device copy bandwidth (read + write) measured in the same run</param>
/// <param name="MaxDiffToWide">largest |output − the wide kernel's output| (0 for the wide kernel itself and on the CPU)</param>
public sealed record AttentionResult(string Shape, int Batch, int Context, string Kernel, double Us, double KvGBps, double CopyGBps, double MaxDiffToWide)
{
    public double RatioToCopy => KvGBps / CopyGBps;
}

/// <summary>
/// Decode attention at the served shapes — Llama-3.2-1B (32 heads, 8 KV heads of 64) and Llama-3.1-8B (32, 8, 128) —
/// batch 1 and 32, contexts 128, 512 and 2048, F32 paged KV cache of 16-token blocks. On a GPU the old wide kernel and
/// the split-context kernels are timed side by side in the same run, each as a CUDA graph of one call per layer over 16
/// layers' caches (as a decode step replays them: launch cost excluded; small caches may stay in L2, which a real step's
/// weight reads would evict); on the CPU device its host attention alone. Warm-up excluded, median of 5 × 10 replays.
/// </summary>
public static class AttentionBench
{
    public static readonly (string Name, int Heads, int KvHeads, int HeadDim)[] Shapes = [("1b", 32, 8, 64), ("8b", 32, 8, 128)];

    const int BlockSize = 16;

    public static IReadOnlyList<AttentionResult> Run(ComputeDevice device, bool quick, TextWriter log)
    {
        int layers = quick ? 2 : 16;
        int[] contexts = quick ? [128, 512] : [128, 512, 2048];
        double copy = LinearBench.CopyGBps(device, quick ? 64L << 20 : 1L << 30, quick);
        var kernels = device.IsCpu ? new[] { ("host", true) } : [("wide", false), ("split", true)];
        var attention = device.Attention;
        var results = new List<AttentionResult>();
        foreach (var (name, heads, kvHeads, headDim) in quick ? Shapes.Take(1) : Shapes)
            foreach (int batch in new[] { 1, 32 })
                foreach (int context in contexts)
                {
                    int blocksPerSeq = (context + BlockSize - 1) / BlockSize, numBlocks = batch * blocksPerSeq;
                    var kv = LinearBench.RandomFloats(numBlocks * BlockSize * kvHeads * headDim, 1);
                    var caches = Enumerable.Range(0, 2 * layers).Select(_ => device.Upload(kv, numBlocks, BlockSize, kvHeads, headDim)).ToArray();
                    try
                    {
                        using var q = device.Upload(LinearBench.RandomFloats(batch * heads * headDim, 1), batch, heads * headDim);
                        using var output = device.Allocate(DType.F32, batch, heads * headDim);
                        using var tables = device.Upload(Enumerable.Range(0, numBlocks).ToArray(), batch, blocksPerSeq);
                        using var seq = device.Upload(Enumerable.Range(0, batch).ToArray(), batch);
                        using var pos = device.Upload(Enumerable.Repeat(context - 1, batch).ToArray(), batch);
                        void Call(int layer) => attention.PagedAttention(output, q, caches[2 * layer], caches[2 * layer + 1], tables, seq, pos,
                            heads, kvHeads, headDim, 1f / MathF.Sqrt(headDim));
                        double bytes = 2.0 * batch * context * kvHeads * headDim * sizeof(float);
                        float[]? wide = null;
                        var line = $"attention {name} batch {batch,2} context {context,4}:";
                        foreach (var (kernel, split) in kernels)
                        {
                            attention.SplitContext = split;
                            double us = MicrosecondsPerCall(device, () =>
                            {
                                for (int l = 0; l < layers; l++) Call(l);
                            }, layers);
                            Call(0);
                            var values = output.ToArray<float>();
                            wide ??= values;
                            double diff = values.Zip(wide, (a, b) => Math.Abs((double)a - b)).Max();
                            var r = new AttentionResult(name, batch, context, kernel, us, bytes / (us * 1e3), copy, diff);
                            results.Add(r);
                            line += $"  {kernel} {us,8:F1} µs ({r.KvGBps,6:F1} GB/s, {r.RatioToCopy:F2} of copy)";
                        }
                        if (kernels.Length == 2)
                        {
                            var (w, s) = (results[^2], results[^1]);
                            line += $"  wide/split x{w.Us / s.Us:F2}, max |split - wide| {s.MaxDiffToWide:E1}";
                        }
                        log.WriteLine(line);
                    }
                    finally
                    {
                        attention.SplitContext = true;
                        foreach (var c in caches) c.Dispose();
                    }
                }
        log.WriteLine($"device copy bandwidth: {copy:F1} GB/s");
        return results;
    }

    /// <summary>One pass (a call per layer) captured as a CUDA graph and replayed (eager elsewhere): median time per call.</summary>
    static double MicrosecondsPerCall(ComputeDevice device, Action pass, int calls)
    {
        if (!DeviceGraph.IsSupported(device)) return LinearBench.MedianMs(device, pass, quick: true) * 1000 / calls;
        pass(); // kernels loaded before capture
        device.Synchronize();
        using var graph = DeviceGraph.Capture(device, pass);
        return LinearBench.MedianMs(device, graph.Launch, quick: true) * 1000 / calls;
    }
}
