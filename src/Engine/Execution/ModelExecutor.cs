using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;

namespace LoraEngine.Execution;

/// <summary>
/// Owns everything on the device — the model, its LoRA layers, the paged KV cache and the step buffers — and
/// runs one forward step for a list of <see cref="ExecutionItem"/>s. Knows nothing of requests or sampling.
/// </summary>
internal sealed class ModelExecutor : IModelRunner
{
    readonly PagedKvCache _cache;
    readonly ForwardWorkspace _workspace;
    readonly StepBatchBuilder _builder;
    readonly DeviceTensor _slotsOfTokens; // [maxTokens] I32 LoRA slot per token
    readonly DeviceTensor _logits;        // [logitChunk, vocab] F32
    readonly int _logitChunk;

    public ModelExecutor(LlamaModel model, LoraManager? loraManager, int maxTokens, int maxSequences, int maxModelLen, int blockSize, int numBlocks)
    {
        Model = model;
        LoraManager = loraManager;
        MaxTokens = maxTokens;
        BlockSize = blockSize;
        MaxBlocksPerSequence = (maxModelLen + blockSize - 1) / blockSize;
        _logitChunk = Math.Min(maxTokens, 256);
        var device = model.Device;
        _cache = new PagedKvCache(device, model.Config, numBlocks, blockSize);
        _workspace = new ForwardWorkspace(device, model.Config, maxTokens);
        _builder = new StepBatchBuilder(device, maxTokens, maxSequences, MaxBlocksPerSequence);
        _slotsOfTokens = device.Zeros(DType.I32, maxTokens);
        _logits = device.Zeros(DType.F32, _logitChunk, model.Config.VocabSize);
    }

    public LlamaModel Model { get; }

    /// <summary>Activates each step's adapters into GPU slots.</summary>
    public LoraManager? LoraManager { get; }

    public int MaxTokens { get; }

    public int BlockSize { get; }

    public int MaxBlocksPerSequence { get; }

    public int NumBlocks => _cache.NumBlocks;

    /// <summary>Device bytes besides weights and LoRA slots for a token budget (workspace, logits, step buffers).</summary>
    public static long ActivationBytes(LlamaConfig config, int maxTokens) =>
        ForwardWorkspace.Bytes(config, maxTokens) + 4L * Math.Min(maxTokens, 256) * config.VocabSize + 4L * maxTokens * 8;

    /// <summary>Runs one forward step over all items packed together and returns their logits.</summary>
    public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
    {
        int tokens = items.Sum(i => i.TokenIds.Count);
        var ids = new int[tokens];
        var positions = new int[tokens];
        var slotMapping = new int[tokens];
        var tokenSeq = new int[tokens];
        var loraSlots = new int[tokens];
        var tables = new int[items.Count * MaxBlocksPerSequence];
        var rows = new List<int>();
        var rowStart = new int[items.Count];
        var adapters = items.Select(i => i.Adapter).OfType<LoraAdapter>().Distinct().ToArray();
        var slotOf = adapters.Length > 0 ? LoraManager!.ActivateForStep(adapters) : null;

        int t = 0;
        for (int s = 0; s < items.Count; s++)
        {
            var item = items[s];
            for (int b = 0; b < item.BlockTable.Count; b++) tables[s * MaxBlocksPerSequence + b] = item.BlockTable[b];
            rowStart[s] = rows.Count;
            for (int i = 0; i < item.TokenIds.Count; i++, t++)
            {
                int pos = item.StartPosition + i;
                ids[t] = item.TokenIds[i];
                positions[t] = pos;
                slotMapping[t] = item.BlockTable[pos / BlockSize] * BlockSize + pos % BlockSize;
                tokenSeq[t] = s;
                loraSlots[t] = item.Adapter is { } adapter ? slotOf![adapter] : -1;
                if (item.NeedsAllLogits || (item.NeedsSample && i == item.TokenIds.Count - 1)) rows.Add(t);
            }
        }

        LoraBatchMapping? mapping = null;
        if (slotOf != null)
        {
            var view = _slotsOfTokens.Slice(0, tokens);
            view.CopyFrom<int>(loraSlots);
            mapping = new LoraBatchMapping(view, anyAdapter: true);
        }
        if (rows.Count == 0) rows.Add(tokens - 1); // the model returns at least one row; nothing reads it
        var batch = _builder.Build(ids, positions, slotMapping, tokenSeq, rows.ToArray(), tables, items.Count, mapping);
        var hidden = Model.Forward(batch, _cache, _workspace);
        var logits = LogitsOf(hidden, batch);

        int vocab = Model.Config.VocabSize;
        var results = new ExecutionResult[items.Count];
        for (int s = 0; s < items.Count; s++)
        {
            var item = items[s];
            int first = rowStart[s];
            float[]? all = null, last = null;
            if (item.NeedsAllLogits)
            {
                all = logits.AsSpan(first * vocab, item.TokenIds.Count * vocab).ToArray();
                if (item.NeedsSample) last = all.AsSpan((item.TokenIds.Count - 1) * vocab, vocab).ToArray();
            }
            else if (item.NeedsSample)
            {
                last = logits.AsSpan(first * vocab, vocab).ToArray();
            }
            results[s] = new ExecutionResult(last, all);
        }
        return results;
    }

    /// <summary>lm_head over the picked rows in chunks, copied to the host: [rows, vocab].</summary>
    float[] LogitsOf(DeviceTensor hidden, StepBatch batch)
    {
        int rows = hidden.Dim(0), vocab = Model.Config.VocabSize;
        var result = new float[(long)rows * vocab];
        for (int start = 0; start < rows; start += _logitChunk)
        {
            int n = Math.Min(_logitChunk, rows - start);
            var chunk = _logits.Slice(0, n);
            Model.ComputeLogits(chunk, hidden.Slice(start, n), batch);
            chunk.CopyTo<float>(result.AsSpan(start * vocab, n * vocab));
        }
        return result;
    }

    public void Dispose()
    {
        _cache.Dispose();
        _workspace.Dispose();
        _builder.Dispose();
        _slotsOfTokens.Dispose();
        _logits.Dispose();
    }
}
