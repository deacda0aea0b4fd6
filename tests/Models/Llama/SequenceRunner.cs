using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;

namespace LoraEngine.Models.Tests.Llama;

/// <summary>
/// Runs single sequences (or several packed together) through a model with a trivially allocated paged
/// cache, for tests: logits at every prompt position, greedy continuations.
/// </summary>
internal sealed class SequenceRunner : IDisposable
{
    readonly LlamaModel _model;
    readonly PagedKvCache _cache;
    readonly ForwardWorkspace _workspace;
    readonly StepBatchBuilder _builder;
    readonly DeviceTensor _logits;
    readonly int _blockSize;
    readonly int _maxBlocksPerSeq;

    public SequenceRunner(LlamaModel model, int maxTokens = 128, int blockSize = 4, int maxSequences = 4)
    {
        _model = model;
        _blockSize = blockSize;
        _maxBlocksPerSeq = (maxTokens + blockSize - 1) / blockSize;
        _cache = new PagedKvCache(model.Device, model.Config, _maxBlocksPerSeq * maxSequences, blockSize);
        _workspace = new ForwardWorkspace(model.Device, model.Config, maxTokens);
        _builder = new StepBatchBuilder(model.Device, maxTokens, maxSequences, _maxBlocksPerSeq);
        _logits = model.Device.Allocate(DType.F32, maxTokens, model.Config.VocabSize);
    }

    /// <summary>
    /// Physical block of logical block b of sequence s: blocks of all sequences are interleaved in reverse
    /// so that paging (not contiguity) is exercised.
    /// </summary>
    int PhysicalBlock(int seq, int logical) => _cache.NumBlocks - 1 - (logical * 4 + seq) % _cache.NumBlocks;

    /// <summary>
    /// One step over chunks of several sequences: chunk i holds tokens of sequence i starting at position starts[i].
    /// Returns logits [sum of chunk lengths, vocab] for every token.
    /// </summary>
    /// <param name="contextFor">builds the step's linear context from the token count (e.g. a LoRA mapping)</param>
    public float[] Step(IReadOnlyList<int[]> chunks, IReadOnlyList<int> starts, Func<int, object?>? contextFor = null)
    {
        var ids = new List<int>();
        var pos = new List<int>();
        var slots = new List<int>();
        var seqOf = new List<int>();
        var tables = new int[chunks.Count * _maxBlocksPerSeq];
        for (int s = 0; s < chunks.Count; s++)
        {
            for (int b = 0; b < _maxBlocksPerSeq; b++) tables[s * _maxBlocksPerSeq + b] = PhysicalBlock(s, b);
            for (int i = 0; i < chunks[s].Length; i++)
            {
                int p = starts[s] + i;
                ids.Add(chunks[s][i]);
                pos.Add(p);
                slots.Add(PhysicalBlock(s, p / _blockSize) * _blockSize + p % _blockSize);
                seqOf.Add(s);
            }
        }
        int t = ids.Count;
        var rows = Enumerable.Range(0, t).ToArray();
        var batch = _builder.Build(ids.ToArray(), pos.ToArray(), slots.ToArray(), seqOf.ToArray(), rows, tables, chunks.Count, contextFor?.Invoke(t));
        var hidden = _model.Forward(batch, _cache, _workspace);
        var logits = _logits.Slice(0, t);
        _model.ComputeLogits(logits, hidden, batch);
        return logits.ToArray<float>();
    }

    /// <summary>Logits [T, vocab] at every position of one prompt, prefilled in one step.</summary>
    public float[] PromptLogits(int[] ids, Func<int, object?>? contextFor = null) => Step([ids], [0], contextFor);

    /// <summary>Greedy continuation: prefill then one decode step per token (argmax, ties → lowest id).</summary>
    public int[] Greedy(int[] prompt, int newTokens, Func<int, object?>? contextFor = null)
    {
        int vocab = _model.Config.VocabSize;
        var logits = PromptLogits(prompt, contextFor);
        var result = new List<int>();
        int next = ArgMax(logits.AsSpan((prompt.Length - 1) * vocab, vocab));
        for (int i = 0; i < newTokens; i++)
        {
            result.Add(next);
            if (i == newTokens - 1) break;
            var step = Step([[next]], [prompt.Length + i], contextFor);
            next = ArgMax(step);
        }
        return result.ToArray();
    }

    public static int ArgMax(ReadOnlySpan<float> row)
    {
        int best = 0;
        for (int i = 1; i < row.Length; i++) if (row[i] > row[best]) best = i;
        return best;
    }

    public void Dispose()
    {
        _cache.Dispose();
        _workspace.Dispose();
        _builder.Dispose();
        _logits.Dispose();
    }
}
