using FsCheck.Xunit;
using LoraEngine.Sampling;
using Xunit;

namespace LoraEngine.Engine.Tests.Sampling;

public class SamplerTests
{
    static readonly float[] s_logits = [1f, 3f, 2f, 3f, -1f]; // ids 1 and 3 tie for the maximum

    [Fact]
    public void Greedy_takes_the_lowest_id_among_ties()
    {
        Assert.Equal(1, Sampler.Sample(s_logits, new SamplingParams { Temperature = 0 }, new Random(0)));
    }

    [Fact]
    public void Top_k_one_and_tiny_top_p_are_greedy_up_to_ties()
    {
        for (int seed = 0; seed < 50; seed++)
        {
            Assert.Contains(Sampler.Sample(s_logits, new SamplingParams { TopK = 1 }, new Random(seed)), new[] { 1, 3 });
            Assert.Contains(Sampler.Sample(s_logits, new SamplingParams { TopP = 0.01 }, new Random(seed)), new[] { 1, 3 });
        }
    }

    [Fact]
    public void Min_p_drops_tokens_below_the_fraction_of_the_top_probability()
    {
        // p ∝ exp(logit): p(2)/p(1) = e^-1 ≈ 0.37, p(0)/p(1) = e^-2 ≈ 0.14 → min_p 0.2 keeps ids 1, 2, 3 only.
        var seen = new HashSet<int>();
        for (int seed = 0; seed < 400; seed++) seen.Add(Sampler.Sample(s_logits, new SamplingParams { MinP = 0.2 }, new Random(seed)));
        Assert.Equal(new HashSet<int> { 1, 2, 3 }, seen);
    }

    [Fact]
    public void Sampling_follows_the_softmax_distribution()
    {
        float[] logits = [0f, MathF.Log(3f)]; // probabilities 1/4 and 3/4
        int ones = 0, n = 20_000;
        var random = new Random(5);
        for (int i = 0; i < n; i++) ones += Sampler.Sample(logits, new SamplingParams(), random);
        Assert.InRange(ones / (double)n, 0.73, 0.77);
    }

    [Property(MaxTest = 50)]
    public void The_same_seed_gives_the_same_draws(int seed)
    {
        var p = new SamplingParams { Temperature = 0.7, TopK = 3, TopP = 0.9 };
        Assert.Equal(Sampler.Sample(s_logits, p, new Random(seed)), Sampler.Sample(s_logits, p, new Random(seed)));
    }

    [Fact]
    public void Penalties_follow_vllm_semantics()
    {
        float[] logits = [2f, -2f, 1f, 0.5f];
        var p = new SamplingParams { RepetitionPenalty = 2, PresencePenalty = 0.5, FrequencyPenalty = 0.25 };
        // prompt [0], output [1, 1]: repetition on 0 and 1; presence/frequency on 1 only (twice).
        Sampler.ApplyPenalties(logits, p, [0, 1, 1], promptLength: 1);
        Assert.Equal(1f, logits[0]);
        Assert.Equal(-4f - 0.5f - 0.5f, logits[1]);
        Assert.Equal(1f, logits[2]);
    }

    [Fact]
    public void Logit_adjustments_add_their_bias_and_a_ban_is_minus_infinity()
    {
        float[] logits = [2f, -2f, 1f, 0.5f];
        Sampler.ApplyLogitAdjustments(logits, [new LogitAdjustment(0, -1.5f), new LogitAdjustment(3, 10f), LogitAdjustment.Ban(2), new LogitAdjustment(2, 100f)]);
        Assert.Equal([0.5f, -2f, float.NegativeInfinity, 10.5f], logits);
        Assert.Equal(3, Sampler.Sample(logits, new SamplingParams { Temperature = 0 }, new Random(0)));
    }

    [Fact]
    public void Logprob_entries_include_the_chosen_token_with_its_rank()
    {
        var lp = Logprobs.LogSoftmax(s_logits);
        Assert.Equal(1.0, lp.Sum(v => Math.Exp(v)), 5);
        var entries = Logprobs.Entries(lp, chosen: 4, k: 2, id => id.ToString());
        Assert.Equal(3, entries.Count);
        Assert.Equal(1, entries[1].Rank);
        Assert.Equal(2, entries[3].Rank);
        Assert.Equal(5, entries[4].Rank);
    }
}
