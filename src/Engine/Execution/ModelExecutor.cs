using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LoraEngine.Execution;

/// <summary>
/// Owns everything on the device — the model, its LoRA layers, the paged KV cache, the step buffers and the CUDA
/// graphs — and runs one forward step for a list of <see cref="ExecutionItem"/>s. Knows nothing of requests.
/// Every step ends with the argmax of each sampled row on the device; a row's logits come back to the host only when
/// its sampling needs them.
///
/// Decode steps (one token per sequence) on CUDA are padded to a bucket (1, 2, 4, 8, 16, 24, 32, …) and replayed from
/// a CUDA graph captured the first time that bucket is seen: the step's inputs go into buffers allocated once, at the
/// same place for every step of a bucket. Padding rows read and write only a KV block of their own.
/// </summary>
internal sealed class ModelExecutor : IModelRunner
{
    static readonly int[] Buckets = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256];

    readonly PagedKvCache _cache;   // numBlocks + 1: the last block takes the writes of padding rows
    readonly ForwardWorkspace _workspace;
    readonly StepBatchBuilder _builder;
    readonly DeviceTensor _slotsOfTokens; // [maxTokens] I32 LoRA slot per token
    readonly DeviceTensor _logits;        // [logitChunk, vocab] F32
    readonly DeviceTensor _argmax;        // [logitChunk] I32
    readonly DeviceTensor _argmaxValues;  // [logitChunk] F32
    readonly int _logitChunk;
    readonly int _padBlock;
    readonly int _maxBucket;
    readonly Dictionary<(int Bucket, bool Lora), DeviceGraph> _graphs = new();
    readonly ILogger _logger;

    public ModelExecutor(LlamaModel model, LoraManager? loraManager, int maxTokens, int maxSequences, int maxModelLen, int blockSize, int numBlocks,
        bool enforceEager = false, ILogger? logger = null)
    {
        _logger = logger ?? NullLogger.Instance;
        Model = model;
        LoraManager = loraManager;
        MaxTokens = maxTokens;
        BlockSize = blockSize;
        MaxBlocksPerSequence = (maxModelLen + blockSize - 1) / blockSize;
        _logitChunk = Math.Min(maxTokens, 256);
        _padBlock = numBlocks;
        var device = model.Device;
        _maxBucket = enforceEager || !DeviceGraph.IsSupported(device) ? 0 : Buckets.LastOrDefault(b => b <= Math.Min(_logitChunk, maxSequences));
        _cache = new PagedKvCache(device, model.Config, numBlocks + 1, blockSize);
        _workspace = new ForwardWorkspace(device, model.Config, maxTokens, maxModelLen);
        _builder = new StepBatchBuilder(device, maxTokens, maxSequences, MaxBlocksPerSequence);
        _slotsOfTokens = device.Zeros(DType.I32, maxTokens);
        _logits = device.Zeros(DType.F32, _logitChunk, model.Config.VocabSize);
        _argmax = device.Zeros(DType.I32, _logitChunk);
        _argmaxValues = device.Zeros(DType.F32, _logitChunk);
    }

    public LlamaModel Model { get; }

    /// <summary>Activates each step's adapters into GPU slots.</summary>
    public LoraManager? LoraManager { get; }

    public int MaxTokens { get; }

    public int BlockSize { get; }

    public int MaxBlocksPerSequence { get; }

    /// <summary>CUDA graphs captured so far (one per decode bucket and LoRA use).</summary>
    public int CapturedGraphs => _graphs.Count;

    /// <summary>Device bytes besides weights and LoRA slots for a token budget (workspace, logits, step buffers, the padding block).</summary>
    public static long ActivationBytes(LlamaConfig config, int maxTokens, int maxModelLen, int blockSize) =>
        ForwardWorkspace.Bytes(config, maxTokens, maxModelLen) + 4L * Math.Min(maxTokens, 256) * (config.VocabSize + 2) + 4L * maxTokens * 8
        + PagedKvCache.BytesPerBlock(config, blockSize);

    /// <summary>Runs one forward step over all items packed together; returns each item's sampled-row results.</summary>
    public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
    {
        int tokens = items.Sum(i => i.TokenIds.Count);
        bool decode = items.All(i => i.TokenIds.Count == 1 && i.NeedsSample && !i.NeedsAllLogits);
        int bucket = decode && items.Count <= _maxBucket ? Buckets.First(b => b >= items.Count) : 0;
        int rowsTotal = Math.Max(bucket, tokens), seqs = Math.Max(bucket, items.Count);

        var ids = new int[rowsTotal];
        var positions = new int[rowsTotal];
        var slotMapping = new int[rowsTotal];
        var tokenSeq = new int[rowsTotal];
        var loraSlots = new int[rowsTotal];
        var tables = new int[seqs * MaxBlocksPerSequence];
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
        // Padding rows (a bucket's spare places): position 0 of a sequence whose only block is the padding block.
        for (int s = items.Count; s < seqs; s++, t++)
        {
            tables[s * MaxBlocksPerSequence] = _padBlock;
            slotMapping[t] = _padBlock * BlockSize;
            tokenSeq[t] = s;
            loraSlots[t] = -1;
            rows.Add(t);
        }

        LoraBatchMapping? mapping = null;
        if (slotOf != null)
        {
            var view = _slotsOfTokens.Slice(0, rowsTotal);
            view.CopyFrom<int>(loraSlots);
            mapping = new LoraBatchMapping(view, anyAdapter: true);
        }
        if (rows.Count == 0) rows.Add(tokens - 1); // the model returns at least one row; nothing reads it
        var batch = _builder.Build(ids, positions, slotMapping, tokenSeq, rows.ToArray(), tables, seqs, mapping);

        var (argmax, maxima, logits) = bucket > 0 ? RunGraph(batch, bucket, anyLora: slotOf != null, items) : RunEager(batch, items, rowStart);
        var results = new ExecutionResult[items.Count];
        int vocab = Model.Config.VocabSize;
        for (int s = 0; s < items.Count; s++)
        {
            var item = items[s];
            int first = rowStart[s];
            int lastRow = first + (item.NeedsAllLogits ? item.TokenIds.Count - 1 : 0);
            float[]? all = null, last = null;
            if (item.NeedsAllLogits) all = logits.AsSpan(first * vocab, item.TokenIds.Count * vocab).ToArray();
            if (item.NeedsSample && item.NeedsLogits) last = logits.AsSpan(lastRow * vocab, vocab).ToArray();
            results[s] = item.NeedsSample ? new ExecutionResult(last, all, argmax[lastRow], maxima[lastRow]) : new ExecutionResult(last, all);
        }
        return results;
    }

    /// <summary>A decode step from the bucket's graph (captured after running it eagerly the first time).</summary>
    (int[] Argmax, float[] Maxima, float[] Logits) RunGraph(StepBatch batch, int bucket, bool anyLora, IReadOnlyList<ExecutionItem> items)
    {
        if (_graphs.TryGetValue((bucket, anyLora), out var graph))
        {
            graph.Launch();
        }
        else
        {
            DecodeForward(batch, bucket);
            var captured = DeviceGraph.Capture(Model.Device, () => DecodeForward(batch, bucket));
            _graphs[(bucket, anyLora)] = captured;
            _logger.LogInformation("Captured the CUDA graph of decode bucket {Bucket}{Lora}: {Nodes} kernels and copies",
                bucket, anyLora ? " with LoRA" : "", captured.Nodes);
        }
        var argmax = new int[bucket];
        var maxima = new float[bucket];
        _argmax.Slice(0, bucket).CopyTo<int>(argmax);
        _argmaxValues.Slice(0, bucket).CopyTo<float>(maxima);
        float[] logits = [];
        if (items.Any(i => i.NeedsLogits))
        {
            logits = new float[(long)items.Count * Model.Config.VocabSize];
            _logits.Slice(0, items.Count).CopyTo<float>(logits);
        }
        return (argmax, maxima, logits);
    }

    /// <summary>Everything a decode step queues on the device: forward, lm_head over every row, argmax.</summary>
    void DecodeForward(StepBatch batch, int rows)
    {
        var hidden = Model.Forward(batch, _cache, _workspace);
        var logits = _logits.Slice(0, rows);
        Model.ComputeLogits(logits, hidden, batch);
        Model.Device.Sampling.Argmax(_argmax.Slice(0, rows), _argmaxValues.Slice(0, rows), logits);
    }

    /// <summary>Any step, launched eagerly: lm_head and argmax over the picked rows in chunks.</summary>
    (int[] Argmax, float[] Maxima, float[] Logits) RunEager(StepBatch batch, IReadOnlyList<ExecutionItem> items, int[] rowStart)
    {
        var hidden = Model.Forward(batch, _cache, _workspace);
        int rows = hidden.Dim(0), vocab = Model.Config.VocabSize;
        // Which picked rows must come back as logits: prompt-logprob rows and the sampled rows of host-sampled items.
        var needed = new bool[rows];
        for (int s = 0; s < items.Count; s++)
        {
            var item = items[s];
            if (item.NeedsAllLogits) Array.Fill(needed, true, rowStart[s], item.TokenIds.Count);
            else if (item.NeedsSample && item.NeedsLogits) needed[rowStart[s]] = true;
        }
        var argmax = new int[rows];
        var maxima = new float[rows];
        var logits = needed.Any(n => n) ? new float[(long)rows * vocab] : [];
        for (int start = 0; start < rows; start += _logitChunk)
        {
            int n = Math.Min(_logitChunk, rows - start);
            var chunk = _logits.Slice(0, n);
            Model.ComputeLogits(chunk, hidden.Slice(start, n), batch);
            Model.Device.Sampling.Argmax(_argmax.Slice(0, n), _argmaxValues.Slice(0, n), chunk);
            _argmax.Slice(0, n).CopyTo<int>(argmax.AsSpan(start, n));
            _argmaxValues.Slice(0, n).CopyTo<float>(maxima.AsSpan(start, n));
            if (Array.IndexOf(needed, true, start, n) >= 0) chunk.CopyTo<float>(logits.AsSpan(start * vocab, n * vocab));
        }
        return (argmax, maxima, logits);
    }

    public void Dispose()
    {
        foreach (var graph in _graphs.Values) graph.Dispose();
        _cache.Dispose();
        _workspace.Dispose();
        _builder.Dispose();
        _slotsOfTokens.Dispose();
        _logits.Dispose();
        _argmax.Dispose();
        _argmaxValues.Dispose();
    }
}
