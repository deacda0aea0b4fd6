using LoraEngine.Core;
using LoraEngine.Sampling;
using LoraEngine.Tensors.Kernels;
using Xunit;

namespace LoraEngine.Engine.Tests.Sampling;

/// <summary>The device row a sequence's parameters become (the kernels' semantics are tested in tests/Tensors).</summary>
public class SamplerTests
{
    static readonly HashSet<int> s_eos = [1];

    /// <summary>A sequence of prompt [5, 6, 5] that generated <paramref name="output"/>.</summary>
    static Sequence NewSequence(SamplingParams p, int[] output, int index = 0, long seed = 77)
    {
        var request = new Request("r", null, [5, 6, 5], p, null, arrival: 0);
        var seq = new Sequence(request, index, seed, detokenizer: null!); // the sampler never decodes
        foreach (int token in output) seq.Append(token);
        return seq;
    }

    [Fact]
    public void Plain_greedy_is_an_argmax_row_and_anything_else_samples()
    {
        var greedy = Sampler.For(NewSequence(new SamplingParams { Temperature = 0 }, []), s_eos);
        Assert.Equal(SampleMode.Argmax, greedy.Row.Mode);
        Assert.Empty(greedy.Edits);
        var biased = Sampler.For(NewSequence(new SamplingParams { Temperature = 0, LogitBias = new Dictionary<int, float> { [3] = 2 } }, []), s_eos);
        Assert.Equal(SampleMode.Sample, biased.Row.Mode);
        Assert.Equal(0f, biased.Row.Temperature);
        Assert.Equal(SampleMode.Sample, Sampler.For(NewSequence(new SamplingParams { Temperature = 0.5 }, []), s_eos).Row.Mode);
    }

    [Fact]
    public void The_row_carries_the_parameters_and_the_draw_key()
    {
        var p = new SamplingParams { Temperature = 0.7, TopK = 40, TopP = 0.9, MinP = 0.05, Logprobs = 3 };
        var row = Sampler.For(NewSequence(p, [9, 10], index: 2, seed: 1234), s_eos).Row;
        Assert.Equal(new SampleRow(SampleMode.Sample, 0.7f, 40, 0.9f, 0.05f, Seed: 1234, Sequence: 2, Position: 2, Logprobs: 3), row);
    }

    [Fact]
    public void Edits_merge_bias_bans_and_penalties_into_one_per_token()
    {
        // Prompt [5, 6, 5], output [7, 7, 1]; min_tokens 5 bans EOS (1) and stop token 6.
        var p = new SamplingParams
        {
            RepetitionPenalty = 1.5, FrequencyPenalty = 0.5, MinTokens = 5, StopTokenIds = [6],
            LogitBias = new Dictionary<int, float> { [7] = 2, [8] = -3 },
        };
        var edits = Sampler.Edits(NewSequence(p, [7, 7, 1]), s_eos).OrderBy(e => e.TokenId).ToArray();
        Assert.Equal(
        [
            new TokenEdit(1, float.NegativeInfinity, Seen: true, OutputCount: 1),
            new TokenEdit(5, 0, Seen: true, OutputCount: 0),
            new TokenEdit(6, float.NegativeInfinity, Seen: true, OutputCount: 0),
            new TokenEdit(7, 2, Seen: true, OutputCount: 2),
            new TokenEdit(8, -3),
        ], edits);
    }

    [Fact]
    public void Without_repetition_penalty_prompt_only_tokens_need_no_edit()
    {
        var p = new SamplingParams { PresencePenalty = 0.5 };
        var edits = Sampler.Edits(NewSequence(p, [7, 5]), s_eos).OrderBy(e => e.TokenId).ToArray();
        Assert.Equal([new TokenEdit(5, 0, Seen: true, OutputCount: 1), new TokenEdit(7, 0, Seen: true, OutputCount: 1)], edits);
        Assert.Empty(Sampler.Edits(NewSequence(new SamplingParams(), [7, 5]), s_eos));
    }

    [Theory]
    [InlineData(20, 20, false)]
    [InlineData(SampleBatch.MaxLogprobs, SampleBatch.MaxLogprobs, false)]
    [InlineData(SampleBatch.MaxLogprobs + 1, -1, true)]
    [InlineData(-1, -1, true)] // the whole vocabulary comes from the raw row
    public void Logprobs_beyond_the_device_top_n_come_from_the_raw_row(int asked, int onDevice, bool raw)
    {
        var sampling = Sampler.For(NewSequence(new SamplingParams { Logprobs = asked }, []), s_eos);
        Assert.Equal(onDevice, sampling.Row.Logprobs);
        Assert.Equal(raw, sampling.RawLogits);
    }

    [Fact]
    public void Token_counts_follow_appended_tokens()
    {
        var seq = NewSequence(new SamplingParams(), [7]);
        Assert.Equal(new Dictionary<int, int> { [5] = 0, [6] = 0, [7] = 1 }, seq.Counts.OutputCounts);
        seq.Append(5);
        seq.Append(7);
        Assert.Equal(new Dictionary<int, int> { [5] = 1, [6] = 0, [7] = 2 }, seq.Counts.OutputCounts);
    }
}
