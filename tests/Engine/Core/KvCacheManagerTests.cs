using FsCheck.Xunit;
using LoraEngine.Core;
using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests.Core;

/// <summary>
/// Prefix caching in the scheduler, without a device. A fake model keeps a K/V value per cache slot: the value at
/// position p is a hash of the value at p − 1 (read through the block table, as attention reads it), the token at p and
/// the content of the adapter the step ran with; the next token is drawn from the last position's value. So a
/// request's tokens equal those it gets alone exactly when every K/V it read was computed from its own tokens and
/// adapter — a wrong cache hit, a block read before it was written or overwritten while shared, shows in the tokens.
/// </summary>
public class KvCacheManagerTests
{
    const int Vocab = 8; // few distinct tokens, so generated text often repeats prompts and other outputs

    static readonly Lazy<LoraAdapter[]> s_adapters = new(() =>
    {
        var config = LlamaConfig.Load(Fixtures.Model("vim-tiny"));
        return EngineFactory.Adapters.Select(a => LoraAdapter.Load(a, Fixtures.Adapter(a), config, 16)).ToArray();
    });

    static long s_arrival;

    static ulong Mix(ulong previous, int token, UInt128 adapter)
    {
        ulong h = (previous ^ (ulong)token * 0x9E3779B97F4A7C15UL ^ (ulong)adapter ^ (ulong)(adapter >> 64)) * 0xBF58476D1CE4E5B9UL;
        return h ^ h >> 31;
    }

    static int Next(ulong kv, int sequenceIndex) => (int)((kv ^ (ulong)sequenceIndex * 0x94D049BB133111EBUL) % Vocab);

    static UInt128 Identity(LoraAdapter? adapter) => adapter?.ContentHash ?? UInt128.Zero;

    /// <summary>What a sequence generates alone: its whole history computed in order with one adapter.</summary>
    static List<int> Alone(IReadOnlyList<int> prompt, LoraAdapter? adapter, int index, int maxTokens)
    {
        ulong kv = 0;
        foreach (int token in prompt) kv = Mix(kv, token, Identity(adapter));
        var output = new List<int>();
        while (true)
        {
            int token = Next(kv, index);
            output.Add(token);
            if (output.Count == maxTokens) return output;
            kv = Mix(kv, token, Identity(adapter));
        }
    }

    /// <summary>The fake device: one value per slot of the pool's blocks.</summary>
    sealed class FakeModel(Scheduler scheduler)
    {
        readonly ulong[] _kv = new ulong[scheduler.Blocks.NumBlocks * scheduler.Kv.BlockSize];
        int BlockSize => scheduler.Kv.BlockSize;

        public int ComputedPromptTokens { get; private set; }

        int Slot(Sequence seq, int position) => seq.BlockTable[position / BlockSize] * BlockSize + position % BlockSize;

        /// <summary>One step: schedule, compute each item in order (an item admitted later may read what an earlier one wrote), sample, finish.</summary>
        public SchedulerOutput Step()
        {
            var plan = scheduler.Schedule();
            foreach (var s in plan.Scheduled)
            {
                var seq = s.Sequence;
                for (int p = s.Start; p < s.Start + s.Count; p++)
                    _kv[Slot(seq, p)] = Mix(p == 0 ? 0 : _kv[Slot(seq, p - 1)], seq.Tokens[p], Identity(seq.Request.Adapter));
                ComputedPromptTokens += Math.Clamp(seq.PromptLength - s.Start, 0, s.Count);
            }
            foreach (var s in plan.Scheduled)
            {
                scheduler.Computed(s);
                if (!s.Samples) continue;
                var seq = s.Sequence;
                seq.Tokens.Add(Next(_kv[Slot(seq, seq.Tokens.Count - 1)], seq.Index));
                if (seq.OutputLength >= seq.Request.SamplingParams.MaxTokens) scheduler.Finish(seq, "length");
            }
            return plan;
        }
    }

    static Request NewRequest(IReadOnlyList<int> prompt, int maxTokens, int n = 1, LoraAdapter? adapter = null, int loraId = 0, bool promptLogprobs = false,
        string? cacheSalt = null)
    {
        var lora = adapter is null ? null : new LoraRequest(adapter.Name, loraId, adapter.Path);
        var request = new Request(Guid.NewGuid().ToString(), null, prompt, new SamplingParams { MaxTokens = maxTokens, N = n, PromptLogprobs = promptLogprobs ? 1 : null },
            lora, Interlocked.Increment(ref s_arrival), cacheSalt) { Adapter = adapter };
        for (int i = 0; i < n; i++) request.Sequences.Add(new Sequence(request, i, seed: 0, null!));
        return request;
    }

    static Scheduler NewScheduler(int blocks, int blockSize, bool caching, int budget = 64, int maxNumSeqs = 8, int maxLoras = 4) =>
        new(new KvCacheManager(new BlockPool(blocks, caching), blockSize, caching), maxNumSeqs, budget, maxLoras);

    static void Add(Scheduler scheduler, Request request)
    {
        foreach (var seq in request.Sequences) scheduler.Add(seq);
    }

    static void Drain(FakeModel model, Scheduler scheduler)
    {
        for (int i = 0; i < 10_000 && scheduler.HasUnfinished; i++) model.Step();
        Assert.False(scheduler.HasUnfinished);
    }

    [Fact]
    public void A_prompt_that_begins_as_an_earlier_one_computes_only_the_rest_and_is_counted()
    {
        var scheduler = NewScheduler(blocks: 40, blockSize: 4, caching: true);
        var model = new FakeModel(scheduler);
        int[] system = Enumerable.Range(0, 22).Select(i => i % Vocab).ToArray();
        var first = NewRequest([.. system, 1, 2], maxTokens: 3);
        Add(scheduler, first);
        Drain(model, scheduler);
        scheduler.Kv.TakeStats();

        var second = NewRequest([.. system, 3, 4, 5], maxTokens: 3);
        Add(scheduler, second);
        var admitted = model.Step().Scheduled.Single();
        Assert.Equal(20, admitted.Start); // five full blocks of the shared 22 tokens
        Assert.Equal(5, admitted.Count);  // the budget pays for the rest only
        Assert.Equal(new PrefixCacheStats(1, 25, 20), scheduler.Kv.TakeStats());
        Drain(model, scheduler);
        Assert.Equal(Alone(second.PromptTokenIds, null, 0, 3), second.Sequences[0].OutputTokens);
        Assert.Equal(0, scheduler.Blocks.NumUsed);
        Assert.True(scheduler.Blocks.NumCached > 0, "free cached blocks stay findable");
    }

    [Fact]
    public void Blocks_are_keyed_by_adapter_content_not_by_name_or_id()
    {
        var (upper, rot13) = (s_adapters.Value[0], s_adapters.Value[1]);
        var scheduler = NewScheduler(blocks: 40, blockSize: 4, caching: true);
        var model = new FakeModel(scheduler);
        int[] prompt = Enumerable.Range(0, 17).Select(i => i % Vocab).ToArray();
        Add(scheduler, NewRequest(prompt, 2, adapter: upper, loraId: 1));
        Drain(model, scheduler);
        scheduler.Kv.TakeStats();

        int HitsOf(Request request)
        {
            Add(scheduler, request);
            Drain(model, scheduler);
            Assert.Equal(Alone(prompt, request.Adapter, 0, 2), request.Sequences[0].OutputTokens);
            return (int)scheduler.Kv.TakeStats().Hits;
        }
        Assert.Equal(0, HitsOf(NewRequest(prompt, 2)));                                // the base model
        Assert.Equal(0, HitsOf(NewRequest(prompt, 2, adapter: rot13, loraId: 1)));    // same id, new weights (a reload)
        Assert.Equal(16, HitsOf(NewRequest(prompt, 2, adapter: upper, loraId: 7)));   // another id, the same weights
    }

    [Fact]
    public void Requests_share_blocks_only_with_requests_of_the_same_cache_salt()
    {
        var scheduler = NewScheduler(blocks: 40, blockSize: 4, caching: true);
        var model = new FakeModel(scheduler);
        int[] prompt = Enumerable.Range(0, 13).Select(i => i % Vocab).ToArray();
        long HitsOf(string? salt)
        {
            Add(scheduler, NewRequest(prompt, 1, cacheSalt: salt));
            Drain(model, scheduler);
            return scheduler.Kv.TakeStats().Hits;
        }
        Assert.Equal(0, HitsOf("tenant-a"));
        Assert.Equal(0, HitsOf(null));
        Assert.Equal(0, HitsOf("tenant-b"));
        Assert.Equal(12, HitsOf("tenant-a"));
        Assert.Equal(12, HitsOf(null));
    }

    [Fact]
    public void A_sequence_whose_adapter_is_reloaded_while_it_runs_offers_none_of_its_later_blocks()
    {
        var (upper, rot13) = (s_adapters.Value[0], s_adapters.Value[1]);
        var scheduler = NewScheduler(blocks: 60, blockSize: 4, caching: true, budget: 8);
        var model = new FakeModel(scheduler);
        int[] prompt = Enumerable.Range(0, 24).Select(i => i * 5 % Vocab).ToArray();
        Add(scheduler, NewRequest([.. prompt[..8], 1], 1, adapter: rot13, loraId: 2)); // caches blocks 0 and 1 under rot13
        Drain(model, scheduler);

        var switched = NewRequest(prompt, 2, adapter: upper, loraId: 1);
        Add(scheduler, switched);
        model.Step();               // blocks 0 and 1 with upper's weights
        switched.Adapter = rot13;   // reloaded in place: blocks 2.. are computed by rot13 over upper's K/V
        Drain(model, scheduler);

        // Under rot13's keys, blocks 0 and 1 are found; block 2 must not be: the one the switched request computed mixes both.
        var later = NewRequest([.. prompt, 3], 2, adapter: rot13, loraId: 2);
        Add(scheduler, later);
        Assert.Equal(8, model.Step().Scheduled.Single().Start);
        Drain(model, scheduler);
        Assert.Equal(Alone(later.PromptTokenIds, rot13, 0, 2), later.Sequences[0].OutputTokens);
    }

    [Theory]
    [InlineData(true, 64)]  // one step: the siblings read the blocks the first sequence writes in that step
    [InlineData(false, 64)]
    [InlineData(true, 16)]  // the prompt in two chunks
    [InlineData(false, 16)]
    public void The_n_sequences_of_a_request_compute_their_prompt_once(bool caching, int budget)
    {
        var scheduler = NewScheduler(blocks: 60, blockSize: 4, caching, budget);
        var model = new FakeModel(scheduler);
        int[] prompt = Enumerable.Range(0, 30).Select(i => i * 3 % Vocab).ToArray(); // 7 full blocks + 2 tokens
        var request = NewRequest(prompt, maxTokens: 4, n: 3);
        Add(scheduler, request);
        Drain(model, scheduler);
        Assert.Equal(30 + 2 * 2, model.ComputedPromptTokens); // the prompt once, then each sibling's partial last block
        foreach (var seq in request.Sequences) Assert.Equal(Alone(prompt, null, seq.Index, 4), seq.OutputTokens);
        Assert.Equal(0, scheduler.Blocks.NumUsed);
        if (caching) Assert.True(scheduler.Blocks.NumCached >= 7, "the prompt's blocks stay cached");
        else Assert.Equal(0, scheduler.Blocks.NumCached); // without caching nothing outlives the request
    }

    [Fact]
    public void The_sequence_that_collects_prompt_logprobs_computes_every_position()
    {
        var scheduler = NewScheduler(blocks: 40, blockSize: 4, caching: true);
        var model = new FakeModel(scheduler);
        int[] prompt = Enumerable.Range(0, 12).Select(i => i % Vocab).ToArray();
        Add(scheduler, NewRequest(prompt, 2));
        Drain(model, scheduler);
        var request = NewRequest(prompt, 2, n: 2, promptLogprobs: true);
        Add(scheduler, request);
        var first = model.Step().Scheduled;
        Assert.Equal(0, first.Single(s => s.Sequence.Index == 0).Start);
        Drain(model, scheduler);
        Assert.Equal(12 + 12 + 4, model.ComputedPromptTokens); // the first request; sequence 0 in full; its sibling past 2 cached blocks
    }

    [Property(MaxTest = 300)]
    public void Random_interleavings_give_every_request_its_tokens_alone_and_return_every_block(int seed, bool caching)
    {
        var rnd = new Random(seed);
        var adapters = s_adapters.Value;
        int blockSize = rnd.Next(1, 6);
        const int longest = 24 + 6; // prompt + output
        int blocks = BlockPool.BlocksFor(longest, blockSize) * rnd.Next(1, 5) + rnd.Next(3);
        var scheduler = NewScheduler(blocks, blockSize, caching, budget: rnd.Next(4, 40), maxNumSeqs: rnd.Next(1, 7), maxLoras: rnd.Next(1, 4));
        var model = new FakeModel(scheduler);
        var prefixes = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, rnd.Next(0, 19)).Select(_ => rnd.Next(Vocab)).ToArray()).ToArray();
        var copies = new Dictionary<int, LoraAdapter> { [1] = adapters[0], [2] = adapters[1], [3] = adapters[2] };
        var requests = new List<Request>();
        var aborted = new HashSet<Request>();
        var reloaded = new HashSet<Request>(); // ran across a reload of their adapter: no single reference
        int toAdd = rnd.Next(1, 14);

        for (int step = 0; step < 5000 && (toAdd > 0 || scheduler.HasUnfinished); step++)
        {
            if (toAdd > 0 && rnd.Next(3) > 0)
            {
                int lora = rnd.Next(0, 4);
                var prefix = prefixes[rnd.Next(prefixes.Length)];
                int[] prompt = [.. prefix, .. Enumerable.Range(0, rnd.Next(prefix.Length == 0 ? 1 : 0, 6)).Select(_ => rnd.Next(Vocab))];
                var request = NewRequest(prompt, rnd.Next(1, 7), n: rnd.Next(4) == 0 ? rnd.Next(2, 4) : 1,
                    lora == 0 ? null : copies[lora], lora, promptLogprobs: rnd.Next(6) == 0);
                requests.Add(request);
                Add(scheduler, request);
                toAdd--;
            }
            if (rnd.Next(12) == 0 && requests.Where(r => !r.IsFinished).ToArray() is { Length: > 0 } live)
            {
                var victim = live[rnd.Next(live.Length)];
                foreach (var seq in victim.Sequences.Where(s => !s.IsFinished)) scheduler.Finish(seq, "abort");
                aborted.Add(victim);
            }
            if (rnd.Next(15) == 0)
            {
                // An in-place reload: the id gets other weights (possibly another id's), its unfinished requests switch to them.
                int id = rnd.Next(1, 4);
                copies[id] = adapters[rnd.Next(adapters.Length)];
                foreach (var r in requests.Where(r => r.LoraId == id && !r.IsFinished))
                {
                    if (r.Adapter != copies[id]) reloaded.Add(r);
                    r.Adapter = copies[id];
                }
            }
            model.Step();
        }

        Assert.False(scheduler.HasUnfinished);
        foreach (var request in requests.Where(r => !aborted.Contains(r) && !reloaded.Contains(r)))
            foreach (var seq in request.Sequences)
                Assert.Equal(Alone(request.PromptTokenIds, request.Adapter, seq.Index, request.SamplingParams.MaxTokens!.Value), seq.OutputTokens);
        Assert.Equal(0, scheduler.Blocks.NumUsed);
        Assert.Equal(scheduler.Blocks.NumBlocks, scheduler.Blocks.NumFree);
        if (!caching) Assert.Equal(0, scheduler.Blocks.NumCached);
    }
}
