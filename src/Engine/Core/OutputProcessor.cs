using LoraEngine.Execution;
using LoraEngine.Models.Tokenization;
using LoraEngine.Sampling;

namespace LoraEngine.Core;

/// <summary>What a step's update produced: outputs to return, what finished, and latency observations.</summary>
internal sealed record OutputUpdate(
    IReadOnlyList<RequestOutput> Outputs,
    IReadOnlyList<Sequence> Finished,
    IReadOnlyList<Request> FinishedRequests,
    int GeneratedTokens,
    IReadOnlyList<TimeSpan> TimesToFirstToken,
    IReadOnlyList<TimeSpan> InterTokenLatencies,
    IReadOnlyList<TimeSpan> RequestLatencies);

/// <summary>
/// Turns a step's logits into tokens and outputs: prompt logprobs, sampling, logprobs, incremental detokenization,
/// stop conditions (EOS, stop token ids, stop strings, max tokens, max model length) and RequestOutputs.
/// </summary>
internal sealed class OutputProcessor(HfTokenizer tokenizer, IReadOnlySet<int> eosIds, int maxModelLen)
{
    public OutputUpdate Update(IReadOnlyList<ScheduledSequence> scheduled, IReadOnlyList<ExecutionResult> results, Scheduler scheduler, EngineArgs args)
    {
        var touched = new List<Request>();
        var finished = new List<Sequence>();
        var ttft = new List<TimeSpan>();
        var itl = new List<TimeSpan>();
        var e2e = new List<TimeSpan>();
        int generated = 0;
        var now = DateTime.UtcNow;

        for (int i = 0; i < scheduled.Count; i++)
        {
            var s = scheduled[i];
            var seq = s.Sequence;
            var request = seq.Request;
            scheduler.Computed(s);
            if (results[i].AllLogits is { } all) CollectPromptLogprobs(request, s, all);
            if (!s.Samples) continue;

            int token = results[i].LastLogits is { } logits ? SampleNext(seq, logits) : results[i].ArgmaxToken;
            generated++;
            if (request.FirstTokenTime is null) ttft.Add(now - request.ArrivalTime);
            else if (request.LastTokenTime is { } last) itl.Add(now - last);
            request.FirstTokenTime ??= now;
            request.LastTokenTime = now;

            if (AppendAndCheck(seq, token) is { } reason)
            {
                scheduler.Finish(seq, reason);
                finished.Add(seq);
            }
            if (!touched.Contains(request)) touched.Add(request);
        }

        var finishedRequests = touched.Where(r => r.IsFinished).ToList();
        foreach (var r in finishedRequests) e2e.Add(now - r.ArrivalTime);
        return new OutputUpdate(touched.Select(ToOutput).ToArray(), finished, finishedRequests, generated, ttft, itl, e2e);
    }

    int SampleNext(Sequence seq, float[] logits)
    {
        var p = seq.Request.SamplingParams;
        var processed = (float[])logits.Clone();
        Sampler.ApplyLogitAdjustments(processed, LogitAdjustments.For(p, seq.OutputLength, eosIds));
        Sampler.ApplyPenalties(processed, p, seq.Tokens, seq.PromptLength);
        int token = Sampler.Sample(processed, p, seq.Random);
        if (p.Logprobs is int k)
        {
            var lp = Logprobs.LogSoftmax(logits);
            seq.Logprobs.Add(Logprobs.Entries(lp, token, k, Decode));
            seq.CumulativeLogprob += lp[token];
        }
        return token;
    }

    /// <summary>Logprob of each prompt token given the tokens before it, from the chunk's logits rows.</summary>
    void CollectPromptLogprobs(Request request, ScheduledSequence s, float[] all)
    {
        int vocab = all.Length / s.Count, k = request.SamplingParams.PromptLogprobs!.Value;
        for (int row = 0; row < s.Count; row++)
        {
            int target = s.Start + row + 1; // row at position p predicts the token at p + 1
            if (target >= request.PromptTokenIds.Count || target < request.PromptLogprobsDone) continue;
            var lp = Logprobs.LogSoftmax(all.AsSpan(row * vocab, vocab));
            request.PromptLogprobs![target] = Logprobs.Entries(lp, request.PromptTokenIds[target], k, Decode);
            request.PromptLogprobsDone = target + 1;
        }
    }

    /// <summary>Appends a sampled token and returns the finish reason if the sequence is done.</summary>
    string? AppendAndCheck(Sequence seq, int token)
    {
        var p = seq.Request.SamplingParams;
        seq.Tokens.Add(token);
        bool eos = !p.IgnoreEos && eosIds.Contains(token);
        bool stopToken = p.StopTokenIds?.Contains(token) == true;
        if (seq.OutputLength >= p.MinTokens && (eos || stopToken))
        {
            // vLLM leaves the stop token's text out unless include_stop_str_in_output; stop_reason names a stop token id, not EOS.
            if (p.IncludeStopStrInOutput) seq.Text += seq.Detokenizer.Push(token) + seq.Detokenizer.Flush();
            seq.StopReason = eos ? null : token;
            return "stop";
        }

        int before = seq.Text.Length;
        seq.Text += seq.Detokenizer.Push(token);
        if (seq.OutputLength >= p.MinTokens)
        {
            var (at, stop) = StopChecker.Find(seq.Text, p.Stop, before);
            if (at >= 0)
            {
                seq.Text = seq.Text[..(p.IncludeStopStrInOutput ? at + stop!.Length : at)];
                seq.StopReason = stop;
                return "stop";
            }
        }
        if (p.MaxTokens is int max && seq.OutputLength >= max) return Flush(seq, "length");
        if (seq.Tokens.Count >= maxModelLen) return Flush(seq, "length");
        return null;
    }

    static string Flush(Sequence seq, string reason)
    {
        seq.Text += seq.Detokenizer.Flush();
        return reason;
    }

    string Decode(int id) => tokenizer.Decode([id]);

    static RequestOutput ToOutput(Request r)
    {
        var outputs = r.Sequences.Select(seq =>
        {
            var p = r.SamplingParams;
            string text = seq.IsFinished ? seq.Text : seq.Text[..StopChecker.VisibleLength(seq.Text, p.Stop)];
            return new CompletionOutput(seq.Index, text, seq.OutputTokens.ToArray(), p.Logprobs != null ? seq.CumulativeLogprob : null,
                p.Logprobs != null ? seq.Logprobs.ToArray() : null, seq.FinishReason) { StopReason = seq.StopReason };
        }).ToArray();
        return new RequestOutput(r.RequestId, r.Prompt, r.PromptTokenIds, r.PromptLogprobs?.ToArray(), outputs, r.IsFinished, r.LoraRequest);
    }
}
