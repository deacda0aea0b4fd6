using FsCheck.Xunit;
using LoraEngine.Core;
using Xunit;

namespace LoraEngine.Engine.Tests.Core;

/// <summary>The scheduler and block allocator without any device: a fake model emits token (last + 1) % 50.</summary>
public class SchedulerTests
{
    static long s_arrival;

    /// <summary>A pool of <paramref name="blocks"/> blocks without prefix caching: these tests are about batching.</summary>
    static KvCacheManager Kv(int blocks, int blockSize) => new(new BlockPool(blocks, retainFreedBlocks: false), blockSize, enablePrefixCaching: false);

    static Sequence NewSequence(int promptLength, int maxTokens, int lora = 0)
    {
        var lr = lora == 0 ? null : new LoraRequest($"a{lora}", lora, "/x");
        var request = new Request(Guid.NewGuid().ToString(), null, Enumerable.Range(0, promptLength).ToArray(),
            new SamplingParams { MaxTokens = maxTokens }, lr, Interlocked.Increment(ref s_arrival));
        var seq = new Sequence(request, 0, seed: 0, null!);
        request.Sequences.Add(seq);
        return seq;
    }

    /// <summary>Runs steps, "sampling" for sequences whose chunk reached the end, until all finish; returns step count.</summary>
    static int Drive(Scheduler scheduler, Action<SchedulerOutput>? observe = null, int maxSteps = 10_000)
    {
        int steps = 0;
        while (scheduler.HasUnfinished && steps++ < maxSteps)
        {
            var output = scheduler.Schedule();
            observe?.Invoke(output);
            foreach (var s in output.Scheduled)
            {
                scheduler.Computed(s);
                if (!s.Samples) continue;
                s.Sequence.Tokens.Add((s.Sequence.Tokens[^1] + 1) % 50);
                if (s.Sequence.OutputLength >= s.Sequence.Request.SamplingParams.MaxTokens) scheduler.Finish(s.Sequence, "length");
            }
        }
        return steps;
    }

    [Fact]
    public void Prefills_are_chunked_to_the_token_budget_and_decodes_come_first()
    {
        var scheduler = new Scheduler(Kv(100, 4), maxNumSeqs: 8, maxNumBatchedTokens: 10, maxLoras: 1);
        var a = NewSequence(25, 3);
        var b = NewSequence(3, 3);
        scheduler.Add(a);
        scheduler.Add(b);
        Drive(scheduler, o =>
        {
            Assert.True(o.NumTokens <= 10);
            Assert.All(o.Scheduled, s => Assert.True(s.Count >= 1));
        });
        Assert.Equal(28, a.Tokens.Count);
        Assert.Equal(6, b.Tokens.Count);
        Assert.Equal(100, scheduler.Blocks.NumFree);
    }

    [Fact]
    public void Max_num_seqs_bounds_the_running_set()
    {
        var scheduler = new Scheduler(Kv(100, 4), maxNumSeqs: 3, maxNumBatchedTokens: 100, maxLoras: 1);
        for (int i = 0; i < 7; i++) scheduler.Add(NewSequence(5, 4));
        Drive(scheduler, o => Assert.True(scheduler.NumRunning <= 3));
        Assert.False(scheduler.HasUnfinished);
    }

    [Fact]
    public void When_blocks_run_out_the_newest_is_preempted_and_later_completes()
    {
        // 6 blocks of 4 tokens; two sequences each need 4 blocks at the end (8 + 8 tokens).
        var scheduler = new Scheduler(Kv(6, 4), maxNumSeqs: 4, maxNumBatchedTokens: 64, maxLoras: 1);
        var old = NewSequence(8, 8);
        var young = NewSequence(8, 8);
        scheduler.Add(old);
        scheduler.Add(young);
        var preempted = new List<Sequence>();
        Drive(scheduler, o => preempted.AddRange(o.Preempted));
        Assert.Contains(young, preempted);
        Assert.DoesNotContain(old, preempted);
        Assert.Equal(Enumerable.Range(0, 8).Concat(Enumerable.Range(8, 8)), old.Tokens);
        Assert.Equal(old.Tokens, young.Tokens); // recomputed, same outputs
        Assert.Equal(6, scheduler.Blocks.NumFree);
    }

    [Fact]
    public void At_most_max_loras_distinct_adapters_run_at_once()
    {
        var scheduler = new Scheduler(Kv(200, 4), maxNumSeqs: 16, maxNumBatchedTokens: 200, maxLoras: 2);
        for (int i = 0; i < 12; i++) scheduler.Add(NewSequence(4, 5, lora: i % 4 + 1));
        Drive(scheduler, _ => Assert.True(scheduler.RunningAdapters.Count <= 2));
    }

    [Fact]
    public void Aging_lets_a_waiting_adapter_in_where_vllms_rule_would_starve_it()
    {
        // Adapter 1 keeps arriving: under vLLM's rule (skip and let later requests overtake) adapter 2 never runs
        // while adapter 1 has work. With aging, adapter 2's request must finish while adapter 1 is still arriving.
        var scheduler = new Scheduler(Kv(400, 4), maxNumSeqs: 8, maxNumBatchedTokens: 64, maxLoras: 1);
        scheduler.Add(NewSequence(4, 4, lora: 1));
        var starving = NewSequence(4, 4, lora: 2);
        scheduler.Add(starving);
        int step = 0;
        while (!starving.IsFinished && step < 200)
        {
            scheduler.Add(NewSequence(4, 4, lora: 1)); // a new adapter-1 request every step
            var output = scheduler.Schedule();
            foreach (var s in output.Scheduled)
            {
                scheduler.Computed(s);
                if (!s.Samples) continue;
                s.Sequence.Tokens.Add(1);
                if (s.Sequence.OutputLength >= 4) scheduler.Finish(s.Sequence, "length");
            }
            step++;
        }
        Assert.True(starving.IsFinished, "the adapter-2 request starved");
        Assert.True(step < 4 * Scheduler.AgingSteps + 20, $"took {step} steps");
    }

    [Property(MaxTest = 100)]
    public void Random_workloads_finish_and_return_every_block(int seed)
    {
        var rnd = new Random(seed);
        var blocks = new BlockPool(rnd.Next(8, 40), retainFreedBlocks: false);
        var scheduler = new Scheduler(new KvCacheManager(blocks, rnd.Next(1, 8), enablePrefixCaching: false), maxNumSeqs: rnd.Next(1, 6), maxNumBatchedTokens: rnd.Next(6, 40), maxLoras: rnd.Next(1, 3));
        var all = new List<Sequence>();
        for (int i = 0; i < rnd.Next(1, 12); i++)
        {
            var seq = NewSequence(rnd.Next(1, 6), rnd.Next(1, 6), lora: rnd.Next(0, 4));
            all.Add(seq);
            scheduler.Add(seq);
        }
        Drive(scheduler);
        Assert.All(all, s => Assert.True(s.IsFinished));
        Assert.Equal(blocks.NumBlocks, blocks.NumFree);
    }
}
