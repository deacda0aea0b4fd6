namespace LoraEngine.Core;

/// <summary>A sequence's share of one step: feed Tokens[Start .. Start+Count) and, if that reaches the end, sample.</summary>
internal sealed record ScheduledSequence(Sequence Sequence, int Start, int Count)
{
    /// <summary>The chunk reaches the last known token, so the step's logits give the next token.</summary>
    public bool Samples => Start + Count == Sequence.Tokens.Count;
}

internal sealed record SchedulerOutput(IReadOnlyList<ScheduledSequence> Scheduled, IReadOnlyList<Sequence> Preempted)
{
    public int NumTokens => Scheduled.Sum(s => s.Count);
}

/// <summary>
/// Continuous batching as vLLM V1 does it, on pure CPU state: each step first continues running sequences
/// (decodes and unfinished prefill chunks), then admits waiting ones, within a token budget
/// (MaxNumBatchedTokens, prefills chunked to fit) and MaxNumSeqs. A waiting sequence starts after its cached prefix
/// (see <see cref="KvCacheManager"/>), so the budget pays only for tokens to compute; the sequences of an n &gt; 1 request
/// start from the prompt blocks the first of them offers in the same step. KV blocks come from the cache manager; when a
/// running sequence cannot grow, the newest running sequence is preempted (blocks freed, recomputed later — from the
/// cache where its blocks are still there: outputs unchanged).
/// At most MaxLoras distinct adapters run at once. Unlike vLLM, waiting requests age: once one has been passed over
/// <see cref="AgingSteps"/> times for the adapter limit, only requests of its adapter (or the base model) are admitted
/// until it runs, so running adapters drain and no adapter starves.
/// </summary>
internal sealed class Scheduler(KvCacheManager kv, int maxNumSeqs, int maxNumBatchedTokens, int maxLoras)
{
    /// <summary>Steps a waiting request may be passed over for the adapter limit before it blocks other adapters.</summary>
    public const int AgingSteps = 4;

    readonly List<Sequence> _waiting = new(); // oldest first (preempted sequences keep their arrival order)
    readonly List<Sequence> _running = new(); // oldest first

    public KvCacheManager Kv => kv;

    public BlockPool Blocks => kv.Pool;

    public int NumWaiting => _waiting.Count;

    public int NumRunning => _running.Count;

    public IReadOnlyList<Sequence> Running => _running;

    public IReadOnlyList<Sequence> Waiting => _waiting;

    public bool HasUnfinished => _waiting.Count > 0 || _running.Count > 0;

    /// <summary>Distinct adapter ids of running sequences (0, the base model, excluded).</summary>
    public IReadOnlySet<int> RunningAdapters => _running.Select(s => s.Request.LoraId).Where(id => id != 0).ToHashSet();

    public void Add(Sequence sequence) => Insert(_waiting, sequence);

    static void Insert(List<Sequence> list, Sequence s)
    {
        int i = list.FindIndex(x => Older(s, x));
        list.Insert(i < 0 ? list.Count : i, s);
    }

    static bool Older(Sequence a, Sequence b) => a.Request.Arrival < b.Request.Arrival || (a.Request.Arrival == b.Request.Arrival && a.Index < b.Index);

    public SchedulerOutput Schedule()
    {
        var scheduled = new List<ScheduledSequence>();
        var preempted = new List<Sequence>();
        int budget = maxNumBatchedTokens;

        // 1. Running sequences, oldest first; the newest give way when blocks run out.
        for (int i = 0; i < _running.Count && budget > 0; i++)
        {
            var seq = _running[i];
            int count = Math.Min(seq.Tokens.Count - seq.NumComputed, budget);
            while (!kv.TryAllocate(seq, count))
            {
                var victim = _running[^1];
                Preempt(victim);
                preempted.Add(victim);
                scheduled.RemoveAll(s => s.Sequence == victim);
                if (victim == seq) break;
            }
            if (seq.Status != SequenceStatus.Running) break; // it preempted itself: nothing newer is left
            scheduled.Add(new ScheduledSequence(seq, seq.NumComputed, count));
            budget -= count;
        }

        // 2. Waiting sequences, oldest first, within the adapter limit and with aging.
        var adapters = RunningAdapters.ToHashSet();
        int? starvingAdapter = _waiting.FirstOrDefault(s => s.SkippedSteps >= AgingSteps)?.Request.LoraId;
        foreach (var seq in _waiting.ToArray())
        {
            if (budget <= 0 || _running.Count >= maxNumSeqs) break;
            if (preempted.Contains(seq)) continue; // preempted in this step: retry next step
            int lora = seq.Request.LoraId;
            bool fits = lora == 0 || adapters.Contains(lora) || adapters.Count < maxLoras;
            bool allowed = starvingAdapter is not int starving || lora == 0 || lora == starving;
            if (!fits || !allowed)
            {
                if (!fits) seq.SkippedSteps++;
                continue;
            }
            var cached = kv.CachedPrefix(seq);
            int count = Math.Min(seq.Tokens.Count - cached.Count * kv.BlockSize, budget);
            if (!kv.TryAdmit(seq, count, cached)) break; // no preemption for newcomers: wait for blocks
            _waiting.Remove(seq);
            seq.Status = SequenceStatus.Running;
            seq.SkippedSteps = 0;
            Insert(_running, seq);
            if (lora != 0) adapters.Add(lora);
            scheduled.Add(new ScheduledSequence(seq, seq.NumComputed, count));
            budget -= count;
        }
        return new SchedulerOutput(scheduled, preempted);
    }

    void Preempt(Sequence seq)
    {
        kv.Free(seq);
        seq.NumComputed = 0;
        seq.Status = SequenceStatus.Waiting;
        _running.Remove(seq);
        Insert(_waiting, seq);
    }

    /// <summary>Records that a step computed the scheduled tokens.</summary>
    public void Computed(ScheduledSequence s) => s.Sequence.NumComputed += s.Count;

    /// <summary>Removes a finished or aborted sequence and frees its blocks at once.</summary>
    public void Finish(Sequence seq, string reason)
    {
        kv.Free(seq);
        seq.Status = SequenceStatus.Finished;
        seq.FinishReason ??= reason;
        _running.Remove(seq);
        _waiting.Remove(seq);
    }
}
