using System.Diagnostics;
using LoraEngine.Tensors;

namespace LoraEngine.Bench.Tensors;

/// <summary>One layer's linears at a token count, against the CPU limits measured in the same run.</summary>
public sealed record CpuLayerResult(int Tokens, double Ms, double WeightGBps, double GFlops, double ReadGBps, double FmaGFlops)
{
    public double RatioToRead => WeightGBps / ReadGBps;

    public double RatioToFma => GFlops / FmaGFlops;
}

/// <summary>
/// The seven BF16 linears of one decoder layer of the llama.cpp peer's shape (q, k, v, o, gate, up, down of hidden 2048,
/// 8 KV heads of 64, MLP 8192), at 1 token (decode: weight GB/s against the all-core read bandwidth) and 128 tokens
/// (prefill: GFLOP/s against the all-core FMA peak). Four layers' weights are cycled so decode reads from memory, not
/// cache. Median of the timed repetitions after warm-up.
/// </summary>
public static class CpuLayerBench
{
    static readonly (int Out, int In)[] Layer = [(2048, 2048), (512, 2048), (512, 2048), (2048, 2048), (8192, 2048), (8192, 2048), (2048, 8192)];

    public static IReadOnlyList<CpuLayerResult> Run(ComputeDevice device, bool quick, TextWriter log)
    {
        int scale = quick ? 4 : 1, layers = quick ? 1 : 4, threads = Environment.ProcessorCount;
        var shapes = Layer.Select(s => (Out: s.Out / scale, In: s.In / scale)).ToArray();
        double read = CpuLimits.ReadGBps(threads, quick ? 64L << 20 : 1L << 30), fma = CpuLimits.FmaGFlops(threads);
        log.WriteLine($"cpu limits ({threads} threads): read {read:F1} GB/s, F32 FMA peak {fma:F1} GFLOP/s");
        var weights = Enumerable.Range(0, layers).Select(_ => shapes.Select(s => Bf16(device, s.Out, s.In)).ToArray()).ToArray();
        var results = new List<CpuLayerResult>();
        try
        {
            int maxIn = shapes.Max(s => s.In), maxOut = shapes.Max(s => s.Out);
            foreach (int tokens in new[] { 1, 128 })
            {
                using var x = device.Upload(LinearBench.RandomFloats(tokens * maxIn, 1), tokens * maxIn);
                using var y = device.Allocate(DType.F32, tokens * maxOut);
                var xs = shapes.Select(s => x.Slice(0, tokens * s.In).Reshape(tokens, s.In)).ToArray();
                var ys = shapes.Select(s => y.Slice(0, tokens * s.Out).Reshape(tokens, s.Out)).ToArray();
                int next = 0;
                double ms = LinearBench.MedianMs(device, () =>
                {
                    var w = weights[next++ % layers];
                    for (int i = 0; i < shapes.Length; i++) device.MatMul.Linear(ys[i], xs[i], w[i]);
                }, quick);
                double bytes = shapes.Sum(s => 2.0 * s.Out * s.In), flops = shapes.Sum(s => 2.0 * s.Out * s.In * tokens);
                var r = new CpuLayerResult(tokens, ms, bytes / (ms * 1e6), flops / (ms * 1e6), read, fma);
                results.Add(r);
                log.WriteLine($"layer linears, {tokens,3} tokens: {ms,8:F3} ms  {r.WeightGBps,6:F1} GB/s ({r.RatioToRead:F2} of read)  {r.GFlops,6:F1} GFLOP/s ({r.RatioToFma:F2} of FMA peak)");
            }
        }
        finally
        {
            foreach (var w in weights.SelectMany(l => l)) w.Dispose();
        }
        return results;
    }

    static DeviceTensor Bf16(ComputeDevice device, int outF, int inF) =>
        device.Upload<ushort>(HalfBits.FromFloat(DType.BF16, LinearBench.RandomFloats(outF * inF, 0.02f)), DType.BF16, outF, inF);
}
