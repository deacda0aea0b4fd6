using LoraEngine.Sampling;
using Xunit;

namespace LoraEngine.Engine.Tests.Sampling;

public class LogitAdjustmentsTests
{
    static readonly HashSet<int> s_eos = [1];

    [Fact]
    public void Logit_bias_becomes_one_addition_per_token()
    {
        var p = new SamplingParams { LogitBias = new Dictionary<int, float> { [5] = -100, [7] = 2.5f } };
        Assert.Equal([new LogitAdjustment(5, -100), new LogitAdjustment(7, 2.5f)], LogitAdjustments.For(p, 0, s_eos).OrderBy(a => a.TokenId));
        Assert.Empty(LogitAdjustments.For(new SamplingParams(), 0, s_eos));
    }

    [Fact]
    public void Min_tokens_bans_eos_and_stop_token_ids_until_reached()
    {
        var p = new SamplingParams { MinTokens = 3, StopTokenIds = [9], IgnoreEos = true };
        Assert.Equal([LogitAdjustment.Ban(1), LogitAdjustment.Ban(9)], LogitAdjustments.For(p, 2, s_eos));
        Assert.Empty(LogitAdjustments.For(p, 3, s_eos));
    }

    [Theory]
    [InlineData(-1, 1f)]
    [InlineData(1024, 1f)]
    [InlineData(3, 100.5f)]
    [InlineData(3, float.NaN)]
    public void Validate_refuses_out_of_vocab_ids_and_biases_outside_plus_minus_100(int token, float bias)
    {
        var p = new SamplingParams { LogitBias = new Dictionary<int, float> { [token] = bias } };
        Assert.Equal("LogitBias", Assert.Throws<ArgumentException>(() => p.Validate(20, 1024)).ParamName);
    }
}
