using System.Diagnostics;
using System.Runtime.InteropServices;
using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace LoraEngine.Execution;

/// <summary>
/// Owns everything on the device — the model, its LoRA layers, the paged KV cache, the step buffers and the CUDA
/// graphs — and runs one forward step for a list of <see cref="ExecutionItem"/>s. Knows nothing of requests.
/// Every step ends with sampling on the device (<see cref="SampleOps"/>): only token ids, finite flags and the requested
/// top-n logprobs come back, and a row's raw logits only when an item asks for more logprobs than the device returns.
///
/// Under tensor parallelism the runner holds one model per rank, each with its own KV cache (its KV heads), workspace
/// and step buffers; every rank runs its share of the step's forward on its own thread (<see cref="RankThreads"/>),
/// meeting the others in the layers' all-reduces, and rank 0 then computes the logits and samples. With several ranks
/// every step runs eagerly: the collectives go through the host, which a CUDA graph cannot capture.
///
/// Decode steps (one token per sequence) on CUDA are padded to a bucket (1, 2, 4, 8, 16, 24, 32, …) and replayed from
/// a CUDA graph captured the first time that bucket is seen: the step's inputs go into buffers allocated once, at the
/// same place for every step of a bucket — the sampling parameters too, in a <see cref="SampleBatch"/> written before each
/// replay. Padding rows read and write only a KV block of their own, and are sampled greedily.
/// </summary>
internal sealed class ModelExecutor : IModelRunner
{
    static readonly int[] Buckets = [1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256];

    readonly LlamaModel[] _models;        // one per tensor-parallel rank; rank 0 computes the logits and samples
    readonly PagedKvCache[] _caches;      // per rank, numBlocks + 1: the last block takes the writes of padding rows
    readonly ForwardWorkspace[] _workspaces;
    readonly StepBatchBuilder[] _builders;
    readonly DeviceTensor[] _slotsOfTokens; // per rank [maxTokens] I32 LoRA slot per token
    readonly RankThreads? _rankThreads;   // with several ranks
    readonly DeviceTensor _logits;        // [logitChunk, vocab] F32
    readonly SampleBatch _sample;         // [logitChunk] rows of sampling parameters and results
    readonly SampleRow[] _chunkRows;      // staging for one chunk's rows
    readonly List<TokenEdit> _chunkEdits = new();
    readonly int _logitChunk;
    readonly int _padBlock;
    readonly int _maxBucket;
    readonly Dictionary<(int Bucket, bool Lora, bool Filtered), DeviceGraph> _graphs = new();
    int _graphsSampleVersion; // the SampleBatch buffers the graphs captured
    readonly ILogger _logger;

    public ModelExecutor(LlamaModel model, LoraManager? loraManager, int maxTokens, int maxSequences, int maxModelLen, int blockSize, int numBlocks,
        bool enforceEager = false, ILogger? logger = null)
        : this([model], loraManager, maxTokens, maxSequences, maxModelLen, blockSize, numBlocks, enforceEager, logger)
    {
    }

    /// <summary>A runner over the models of every tensor-parallel rank (rank order; one: a single device).</summary>
    /// <remarks><paramref name="abortRanks"/> breaks the ranks' communicator group when a rank fails (several ranks only).</remarks>
    public ModelExecutor(IReadOnlyList<LlamaModel> ranks, LoraManager? loraManager, int maxTokens, int maxSequences, int maxModelLen, int blockSize, int numBlocks,
        bool enforceEager = false, ILogger? logger = null, Action? abortRanks = null)
    {
        _logger = logger ?? NullLogger.Instance;
        _models = ranks.ToArray();
        var model = _models[0];
        Model = model;
        LoraManager = loraManager;
        MaxTokens = maxTokens;
        BlockSize = blockSize;
        MaxBlocksPerSequence = (maxModelLen + blockSize - 1) / blockSize;
        _logitChunk = Math.Min(maxTokens, 256);
        _padBlock = numBlocks;
        var device = model.Device;
        _maxBucket = enforceEager || _models.Length > 1 || !DeviceGraph.IsSupported(device) ? 0 : Buckets.LastOrDefault(b => b <= Math.Min(_logitChunk, maxSequences));
        _caches = _models.Select(m => new PagedKvCache(m.Device, m.ShardConfig, numBlocks + 1, blockSize)).ToArray();
        _workspaces = _models.Select(m => new ForwardWorkspace(m.Device, m.ShardConfig, maxTokens, maxModelLen)).ToArray();
        _builders = _models.Select(m => new StepBatchBuilder(m.Device, maxTokens, maxSequences, MaxBlocksPerSequence)).ToArray();
        _slotsOfTokens = _models.Select(m => m.Device.Zeros(DType.I32, maxTokens)).ToArray();
        if (_models.Length > 1) _rankThreads = new RankThreads(_models.Length, abortRanks ?? (() => { }));
        _logits = device.Zeros(DType.F32, _logitChunk, model.Config.VocabSize);
        _sample = new SampleBatch(device, _logitChunk, model.Config.VocabSize);
        _chunkRows = new SampleRow[_logitChunk];
    }

    /// <summary>Rank 0's model (the only one on a single device).</summary>
    public LlamaModel Model { get; }

    /// <summary>Tensor-parallel ranks (1 on a single device).</summary>
    public int Ranks => _models.Length;

    /// <summary>Activates each step's adapters into GPU slots.</summary>
    public LoraManager? LoraManager { get; }

    public int MaxTokens { get; }

    public int BlockSize { get; }

    public int MaxBlocksPerSequence { get; }

    public TimeSpan DeviceWait { get; private set; }

    /// <summary>CUDA graphs captured so far (one per decode bucket, LoRA use and filtered sampling).</summary>
    public int CapturedGraphs => _graphs.Count;

    /// <summary>
    /// Device bytes besides weights and LoRA slots for a token budget (workspace, logits, step buffers, the padding
    /// block, and what the device's attention and linear families allocated for their workspaces: split attention and
    /// tensor cores on CUDA, none on the CPU); under tensor parallelism give rank 0's share of the config
    /// (<see cref="LlamaConfig.ShardFor"/>).
    /// </summary>
    public static long ActivationBytes(ComputeDevice device, LlamaConfig config, int maxTokens, int maxModelLen, int blockSize) =>
        ForwardWorkspace.Bytes(config, maxTokens, maxModelLen) + device.Attention.AllocatedWorkspaceBytes + device.MatMul.AllocatedWorkspaceBytes + 4L * Math.Min(maxTokens, 256) * config.VocabSize
        + SampleBatch.Bytes(Math.Min(maxTokens, 256), config.VocabSize) + 4L * maxTokens * 8 + PagedKvCache.BytesPerBlock(config, blockSize);

    /// <summary>Runs one forward step over all items packed together; returns each item's sampled-row results.</summary>
    public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
    {
        int tokens = items.Sum(i => i.TokenIds.Count);
        bool decode = items.All(i => i.TokenIds.Count == 1 && i.NeedsSample && i.Scoring == null);
        int bucket = decode && items.Count <= _maxBucket ? Buckets.First(b => b >= items.Count) : 0;
        int rowsTotal = Math.Max(bucket, tokens), seqs = Math.Max(bucket, items.Count);

        var ids = new int[rowsTotal];
        var positions = new int[rowsTotal];
        var slotMapping = new int[rowsTotal];
        var tokenSeq = new int[rowsTotal];
        var loraSlots = new int[rowsTotal];
        var tables = new int[seqs * MaxBlocksPerSequence];
        var rows = new List<int>();
        var samples = new List<(SampleRow Row, IReadOnlyList<TokenEdit> Edits)>(); // one per picked row
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
                bool sampled = item.Sampling != null && i == item.TokenIds.Count - 1;
                if (item.Scoring == null && !sampled) continue;
                rows.Add(t);
                samples.Add(sampled ? (item.Sampling!.Row, item.Sampling.Edits) : (ScoreRow(item.Scoring!, i), []));
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
            samples.Add((SampleRow.Greedy, []));
        }

        if (rows.Count == 0) // the model returns at least one row; nothing reads it
        {
            rows.Add(tokens - 1);
            samples.Add((SampleRow.Greedy, []));
        }
        // Every rank gets the same step, in its own device's buffers.
        var logitRows = rows.ToArray();
        var batches = new StepBatch[_models.Length];
        for (int r = 0; r < batches.Length; r++)
        {
            LoraBatchMapping? mapping = null;
            if (slotOf != null)
            {
                var view = _slotsOfTokens[r].Slice(0, rowsTotal);
                view.CopyFrom<int>(loraSlots);
                mapping = new LoraBatchMapping(view, anyAdapter: true);
            }
            batches[r] = _builders[r].Build(ids, positions, slotMapping, tokenSeq, logitRows, tables, seqs, mapping);
        }

        var (outcomes, logits) = bucket > 0 ? RunGraph(batches[0], bucket, anyLora: slotOf != null, items, samples) : RunEager(batches, items, samples, rowStart);
        var results = new ExecutionResult[items.Count];
        int vocab = Model.Config.VocabSize;
        for (int s = 0; s < items.Count; s++)
        {
            var item = items[s];
            int first = rowStart[s], count = item.TokenIds.Count;
            int lastRow = first + (item.Scoring != null ? count - 1 : 0);
            var prompt = item.Scoring is { RawLogits: false } scoring
                ? Enumerable.Range(0, count).Select(i => scoring.Targets[i] >= 0 ? outcomes[first + i] : null).ToArray()
                : null;
            var all = item.Scoring is { RawLogits: true } ? logits.AsSpan(first * vocab, count * vocab).ToArray() : null;
            var last = item.Sampling is { RawLogits: true } ? logits.AsSpan(lastRow * vocab, vocab).ToArray() : null;
            results[s] = new ExecutionResult(item.NeedsSample ? outcomes[lastRow] : null, prompt, last, all);
        }
        return results;
    }

    /// <summary>A prompt row: the logprob of the token it predicts, or nothing (a row of a scored chunk without a target).</summary>
    static SampleRow ScoreRow(PromptScoring scoring, int i) =>
        scoring.RawLogits || scoring.Targets[i] < 0 ? SampleRow.Greedy : new SampleRow(SampleMode.Score, Logprobs: scoring.TopN, Target: scoring.Targets[i]);

    /// <summary>Whether the item's raw logits come back to the host.</summary>
    static bool WantsRawLogits(ExecutionItem item) => item.Sampling is { RawLogits: true } || item.Scoring is { RawLogits: true };

    /// <summary>Writes the sample rows [start, start + n) and their edits into the step's <see cref="SampleBatch"/>.</summary>
    void WriteSamples(List<(SampleRow Row, IReadOnlyList<TokenEdit> Edits)> samples, int start, int n)
    {
        _chunkEdits.Clear();
        for (int r = 0; r < n; r++)
        {
            _chunkRows[r] = samples[start + r].Row;
            _chunkEdits.AddRange(samples[start + r].Edits);
        }
        _sample.Write(_chunkRows.AsSpan(0, n), CollectionsMarshal.AsSpan(_chunkEdits));
    }

    /// <summary>Reads the last sample run (the picked rows [start, start + n)) into <paramref name="outcomes"/>[start …].</summary>
    void ReadOutcomes(List<(SampleRow Row, IReadOnlyList<TokenEdit> Edits)> samples, int start, int n, RowOutcome?[] outcomes)
    {
        bool logprobs = false;
        for (int r = 0; r < n; r++) logprobs |= samples[start + r].Row.Logprobs >= 0;
        // The read waits for the step's work to finish, then copies its few results back: the device's share of the step.
        long waitStart = Stopwatch.GetTimestamp();
        _sample.Read(n, logprobs);
        DeviceWait += Stopwatch.GetElapsedTime(waitStart);
        for (int r = 0; r < n; r++)
        {
            var row = samples[start + r].Row;
            bool finite = _sample.Finite(r);
            RowLogprobs? lp = null;
            if (row.Logprobs >= 0 && finite)
                lp = new RowLogprobs(_sample.Logprob(r), _sample.Rank(r), _sample.TopIdsOf(r, row.Logprobs).ToArray(), _sample.TopLogprobsOf(r, row.Logprobs).ToArray());
            outcomes[start + r] = new RowOutcome(_sample.Token(r), finite, lp);
        }
    }

    /// <summary>A decode step from the bucket's graph (captured after running it eagerly the first time).</summary>
    (RowOutcome?[] Outcomes, float[] Logits) RunGraph(StepBatch batch, int bucket, bool anyLora, IReadOnlyList<ExecutionItem> items,
        List<(SampleRow Row, IReadOnlyList<TokenEdit> Edits)> samples)
    {
        WriteSamples(samples, 0, bucket);
        if (_sample.Version != _graphsSampleVersion)
        {
            // The edit buffers were reallocated (a step with more edits than any before): every graph read the old ones.
            foreach (var stale in _graphs.Values) stale.Dispose();
            _graphs.Clear();
            _graphsSampleVersion = _sample.Version;
        }
        // Steps with a filtering row (top-k, top-p, min-p) replay a graph that has the select kernels; others one without.
        var key = (bucket, anyLora, _sample.AnyFiltered);
        if (_graphs.TryGetValue(key, out var graph))
        {
            graph.Launch();
        }
        else
        {
            DecodeForward(batch, bucket);
            var captured = DeviceGraph.Capture(Model.Device, () => DecodeForward(batch, bucket));
            _graphs[key] = captured;
            _logger.LogInformation("Captured the CUDA graph of decode bucket {Bucket}{Lora}{Filtered}: {Nodes} kernels and copies, {Programmatic} launched programmatically",
                bucket, anyLora ? " with LoRA" : "", key.Item3 ? " with top-k/top-p/min-p" : "", captured.Nodes, captured.ProgrammaticEdges);
        }
        var outcomes = new RowOutcome?[bucket];
        ReadOutcomes(samples, 0, items.Count, outcomes);
        float[] logits = [];
        if (items.Any(WantsRawLogits))
        {
            logits = new float[(long)items.Count * Model.Config.VocabSize];
            _logits.Slice(0, items.Count).CopyTo<float>(logits);
        }
        return (outcomes, logits);
    }

    /// <summary>Everything a decode step queues on the device: forward, lm_head over every row, sampling.</summary>
    void DecodeForward(StepBatch batch, int rows)
    {
        var hidden = Model.Forward(batch, _caches[0], _workspaces[0]);
        var logits = _logits.Slice(0, rows);
        Model.ComputeLogits(logits, hidden, batch);
        Model.Device.Sample.Run(_sample, logits);
    }

    /// <summary>Any step, launched eagerly: lm_head and sampling over the picked rows in chunks.</summary>
    (RowOutcome?[] Outcomes, float[] Logits) RunEager(StepBatch[] batches, IReadOnlyList<ExecutionItem> items,
        List<(SampleRow Row, IReadOnlyList<TokenEdit> Edits)> samples, int[] rowStart)
    {
        var batch = batches[0];
        var hidden = Forward(batches);
        int rows = hidden.Dim(0), vocab = Model.Config.VocabSize;
        // Which picked rows must come back as raw logits: those of items that asked for more logprobs than the device returns.
        var needed = new bool[rows];
        for (int s = 0; s < items.Count; s++)
        {
            var item = items[s];
            if (item.Scoring is { RawLogits: true }) Array.Fill(needed, true, rowStart[s], item.TokenIds.Count);
            else if (item.Sampling is { RawLogits: true }) needed[rowStart[s] + (item.Scoring != null ? item.TokenIds.Count - 1 : 0)] = true;
        }
        var outcomes = new RowOutcome?[rows];
        var logits = needed.Any(n => n) ? new float[(long)rows * vocab] : [];
        for (int start = 0; start < rows; start += _logitChunk)
        {
            int n = Math.Min(_logitChunk, rows - start);
            var chunk = _logits.Slice(0, n);
            Model.ComputeLogits(chunk, hidden.Slice(start, n), batch);
            WriteSamples(samples, start, n);
            Model.Device.Sample.Run(_sample, chunk);
            ReadOutcomes(samples, start, n, outcomes);
            if (Array.IndexOf(needed, true, start, n) >= 0) chunk.CopyTo<float>(logits.AsSpan(start * vocab, n * vocab)); // raw again: sampling restores its edits
        }
        return (outcomes, logits);
    }

    /// <summary>Every rank's forward over its batch, each on its rank's thread; returns rank 0's final hidden rows.</summary>
    DeviceTensor Forward(StepBatch[] batches)
    {
        if (_rankThreads is null) return Model.Forward(batches[0], _caches[0], _workspaces[0]);
        DeviceTensor? hidden = null;
        _rankThreads.Run(r =>
        {
            var h = _models[r].Forward(batches[r], _caches[r], _workspaces[r]);
            if (r == 0) hidden = h;
        });
        return hidden!;
    }

    public void Dispose()
    {
        foreach (var graph in _graphs.Values) graph.Dispose();
        _rankThreads?.Dispose();
        foreach (var d in _caches.Concat<IDisposable>(_workspaces).Concat(_builders).Concat(_slotsOfTokens)) d.Dispose();
        _logits.Dispose();
        _sample.Dispose();
    }
}
