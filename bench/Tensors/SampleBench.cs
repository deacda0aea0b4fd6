using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Bench.Tensors;

/// <summary>One measured sampling run over logits [rows, vocab], against the plain argmax and one read of the logits.</summary>
/// <param name="ReadMs">the logits' bytes at the device copy bandwidth measured in the same run: the limit of any pass over them</param>
public sealed record SampleResult(string Config, int Rows, int Vocab, double Ms, double ArgmaxMs, double ReadMs)
{
    public double RatioToArgmax => Ms / ArgmaxMs;

    /// <summary>How many reads of the logits the run costs.</summary>
    public double Reads => Ms / ReadMs;
}

/// <summary>
/// Times <see cref="SampleOps.Run"/> on Llama 3's vocabulary (128256), 1 and 32 rows, for greedy rows, a plain draw at
/// temperature 0.8, top-k 50 + top-p 0.9 + min-p, and top-p with penalties over 256 seen tokens and 5 logprobs — beside
/// the argmax alone (what a greedy step paid before) and one read of the logits at copy bandwidth. Launched eagerly
/// (a CUDA graph saves the launch overhead); warm-up excluded, median reported.
/// </summary>
public static class SampleBench
{
    public static IReadOnlyList<SampleResult> Run(ComputeDevice device, bool quick, TextWriter log)
    {
        int vocab = quick ? 32000 : 128256;
        var configs = new (string Name, SampleRow Row, int Edits)[]
        {
            ("greedy", SampleRow.Greedy, 0),
            ("t0.8", new SampleRow(SampleMode.Sample, Temperature: 0.8f, Seed: 1), 0),
            ("t0.8 k50 p0.9 minp0.05", new SampleRow(SampleMode.Sample, Temperature: 0.8f, TopK: 50, TopP: 0.9f, MinP: 0.05f, Seed: 1), 0),
            ("t0.8 p0.9 penalties lp5", new SampleRow(SampleMode.Sample, Temperature: 0.8f, TopP: 0.9f, Seed: 1, RepetitionPenalty: 1.1f,
                PresencePenalty: 0.5f, FrequencyPenalty: 0.5f, Logprobs: 5), 256),
        };
        var results = new List<SampleResult>();
        foreach (int rows in new[] { 1, 32 })
        {
            using var logits = device.Upload(LinearBench.RandomFloats(rows * vocab, 8f), rows, vocab);
            double readMs = logits.SizeInBytes / (LinearBench.CopyGBps(device, logits.SizeInBytes, quick) * 1e6);
            using var argmax = device.Allocate(DType.I32, rows);
            using var values = device.Allocate(DType.F32, rows);
            double argmaxMs = LinearBench.MedianMs(device, () => device.Sampling.Argmax(argmax, values, logits), quick);
            using var batch = new SampleBatch(device, rows, vocab, editCapacity: rows * 256);
            foreach (var (name, row, editCount) in configs)
            {
                var edits = Enumerable.Range(0, rows).SelectMany(_ => Enumerable.Range(0, editCount).Select(t => new TokenEdit(t * 37 % vocab, 0, Seen: true, t % 3))).ToArray();
                batch.Write(Enumerable.Range(0, rows).Select(r => row with { Position = r, Edits = editCount }).ToArray(), edits);
                double ms = LinearBench.MedianMs(device, () => device.Sample.Run(batch, logits), quick);
                var result = new SampleResult(name, rows, vocab, ms, argmaxMs, readMs);
                results.Add(result);
                log.WriteLine($"sample {name,-24} rows {rows,2} vocab {vocab}: {ms,8:F3} ms  argmax {argmaxMs,7:F3} ms (x{result.RatioToArgmax:F1})  " +
                    $"{result.Reads:F1} reads of the logits at copy bandwidth ({readMs * 1000:F1} µs each)");
            }
        }
        return results;
    }
}
