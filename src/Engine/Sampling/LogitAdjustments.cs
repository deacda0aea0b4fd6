namespace LoraEngine.Sampling;

/// <summary>One change to one token's logit before sampling: <c>logits[TokenId] += Bias</c>; a ban is Bias = −∞.</summary>
internal readonly record struct LogitAdjustment(int TokenId, float Bias)
{
    public static LogitAdjustment Ban(int tokenId) => new(tokenId, float.NegativeInfinity);
}

/// <summary>
/// Every logit change a sequence's parameters ask for, as one flat list of per-token additions. It is the single
/// place that turns parameters into logit changes, so a device sampler can take the lists of a batch as
/// (row, token, bias) triples and apply them with one scatter-add.
/// </summary>
internal static class LogitAdjustments
{
    /// <summary>
    /// The adjustments for a sequence's next token, in vLLM's order of application: logit_bias, then — while fewer than
    /// min_tokens were generated — a ban on EOS and on stop_token_ids (vLLM bans EOS then even with ignore_eos).
    /// </summary>
    public static List<LogitAdjustment> For(SamplingParams p, int outputLength, IReadOnlySet<int> eosIds)
    {
        var adjustments = new List<LogitAdjustment>();
        if (p.LogitBias != null)
            foreach (var (token, bias) in p.LogitBias) adjustments.Add(new LogitAdjustment(token, bias));
        if (outputLength < p.MinTokens)
        {
            foreach (int eos in eosIds) adjustments.Add(LogitAdjustment.Ban(eos));
            foreach (int stop in p.StopTokenIds ?? []) adjustments.Add(LogitAdjustment.Ban(stop));
        }
        return adjustments;
    }
}
