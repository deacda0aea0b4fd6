using System.Numerics.Tensors;
using LoraEngine.Execution;
using LoraEngine.Models.Tokenization;
using LoraEngine.Sampling;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Core;

/// <summary>What a step's update produced: outputs to return, what finished, and latency observations.</summary>
internal sealed record OutputUpdate(
    IReadOnlyList<RequestOutput> Outputs,
    IReadOnlyList<Sequence> Finished,
    IReadOnlyList<Request> FinishedRequests,
    int GeneratedTokens,
    int FailedRequests,
    IReadOnlyList<TimeSpan> TimesToFirstToken,
    IReadOnlyList<TimeSpan> InterTokenLatencies,
    IReadOnlyList<TimeSpan> RequestLatencies);

/// <summary>
/// Turns a step's sampled rows into tokens and outputs: prompt logprobs, logprobs, incremental detokenization,
/// stop conditions (EOS, stop token ids, stop strings, max tokens, max model length) and RequestOutputs.
/// A problem with one request (non-finite logits, or anything thrown while handling its output) fails that request
/// only, with an error its client sees; the others in the step carry on.
/// </summary>
internal sealed class OutputProcessor(HfTokenizer tokenizer, IReadOnlySet<int> eosIds, int maxModelLen, ILogger logger)
{
    public const string ErrorFinishReason = "error";

    public const string NonFiniteLogits = "The model produced non-finite logits (NaN or infinity) for this request.";

    public OutputUpdate Update(IReadOnlyList<ScheduledSequence> scheduled, IReadOnlyList<ExecutionResult> results, Scheduler scheduler)
    {
        var touched = new List<Request>();
        var finished = new List<Sequence>();
        var ttft = new List<TimeSpan>();
        var itl = new List<TimeSpan>();
        var e2e = new List<TimeSpan>();
        int generated = 0, failed = 0;
        var now = DateTime.UtcNow;

        for (int i = 0; i < scheduled.Count; i++)
        {
            var s = scheduled[i];
            var seq = s.Sequence;
            var request = seq.Request;
            if (seq.IsFinished) continue; // its request failed earlier in this step
            try
            {
                scheduler.Computed(s);
                var result = results[i];
                if (result.AllLogits is { } all)
                {
                    if (!AllFinite(all)) throw new NonFiniteLogitsException();
                    CollectPromptLogprobs(request, s, all);
                }
                else if (result.Prompt is { } prompt)
                {
                    CollectPromptLogprobs(request, s, prompt);
                }
                if (!s.Samples) continue;
                var sampled = result.Sampled!;
                if (!sampled.Finite || (result.LastLogits is { } raw && !AllFinite(raw))) throw new NonFiniteLogitsException();
                int token = sampled.Token;
                AddLogprobs(seq, token, sampled, result.LastLogits);
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
            }
            catch (Exception e)
            {
                if (e is not NonFiniteLogitsException) logger.LogError(e, "Processing the output of request {RequestId} failed; the request fails, the others go on", request.RequestId);
                finished.AddRange(Fail(request, e is NonFiniteLogitsException ? NonFiniteLogits : "Internal error while processing this request's output.", scheduler));
                failed++;
            }
            if (!touched.Contains(request)) touched.Add(request);
        }

        var finishedRequests = touched.Where(r => r.IsFinished).ToList();
        foreach (var r in finishedRequests) e2e.Add(now - r.ArrivalTime);
        return new OutputUpdate(touched.Select(Output).OfType<RequestOutput>().ToArray(), finished, finishedRequests, generated, failed, ttft, itl, e2e);
    }

    /// <summary>Finishes every unfinished sequence of a request with reason "error"; returns them.</summary>
    public static IReadOnlyList<Sequence> Fail(Request request, string error, Scheduler scheduler)
    {
        request.Error ??= error;
        var failed = request.Sequences.Where(q => !q.IsFinished).ToArray();
        foreach (var q in failed) scheduler.Finish(q, ErrorFinishReason);
        return failed;
    }

    /// <summary>Raw logits are finite; a NaN or infinity means the model diverged for this request.</summary>
    static bool AllFinite(ReadOnlySpan<float> logits) => float.IsFinite(TensorPrimitives.MaxMagnitude(logits));

    sealed class NonFiniteLogitsException : Exception;

    /// <summary>The sampled token's logprobs, from the device's top-n, or from the raw row when more was asked.</summary>
    void AddLogprobs(Sequence seq, int token, RowOutcome sampled, float[]? rawLogits)
    {
        if (seq.Request.SamplingParams.Logprobs is not int k) return;
        if (rawLogits is not null)
        {
            var lp = Logprobs.LogSoftmax(rawLogits);
            seq.Logprobs.Add(Logprobs.Entries(lp, token, k, Decode));
            seq.CumulativeLogprob += lp[token];
            return;
        }
        var row = sampled.Logprobs!;
        seq.Logprobs.Add(Logprobs.Entries(row, token, Decode));
        seq.CumulativeLogprob += row.Logprob;
    }

    /// <summary>Logprob of each prompt token given the tokens before it, from the chunk's raw logits rows (a top-n beyond the device's).</summary>
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

    /// <summary>Logprob of each prompt token given the tokens before it, as the device scored the chunk's rows.</summary>
    void CollectPromptLogprobs(Request request, ScheduledSequence s, IReadOnlyList<RowOutcome?> rows)
    {
        for (int row = 0; row < s.Count; row++)
        {
            if (rows[row] is not { } scored) continue;
            if (!scored.Finite) throw new NonFiniteLogitsException();
            int target = s.Start + row + 1;
            request.PromptLogprobs![target] = Logprobs.Entries(scored.Logprobs!, scored.Token, Decode);
            request.PromptLogprobsDone = target + 1;
        }
    }

    /// <summary>Appends a sampled token and returns the finish reason if the sequence is done.</summary>
    string? AppendAndCheck(Sequence seq, int token)
    {
        var p = seq.Request.SamplingParams;
        seq.Append(token);
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

    /// <summary>
    /// The request's output after a step, of the kind it asked for; null for a final-only request still running and for
    /// a delta with nothing new (a prefill chunk that sampled nothing).
    /// </summary>
    public static RequestOutput? Output(Request r) => r.SamplingParams.OutputKind switch
    {
        RequestOutputKind.FinalOnly => r.IsFinished ? ToOutput(r) : null,
        RequestOutputKind.Delta => ToDelta(r),
        _ => ToOutput(r),
    };

    /// <summary>What each sequence added since the request's previous output (the prompt logprobs computed since then).</summary>
    static RequestOutput? ToDelta(Request r)
    {
        var p = r.SamplingParams;
        var outputs = r.Sequences.Select(seq =>
        {
            string visible = seq.IsFinished ? seq.Text : seq.Text[..StopChecker.VisibleLength(seq.Text, p.Stop)];
            var (tokensSent, textSent) = seq.DeltaSent;
            int newTokens = seq.OutputLength - tokensSent;
            // Held-back text is never sent, so a stop string cut at the end cannot take back text already sent.
            string text = visible.Length > textSent ? visible[textSent..] : "";
            seq.DeltaSent = (seq.OutputLength, Math.Max(textSent, visible.Length));
            return new CompletionOutput(seq.Index, text, seq.Tokens.GetRange(seq.PromptLength + tokensSent, newTokens).ToArray(),
                p.Logprobs != null ? seq.CumulativeLogprob : null, p.Logprobs != null ? seq.Logprobs.GetRange(tokensSent, newTokens).ToArray() : null,
                seq.FinishReason) { StopReason = seq.StopReason };
        }).ToArray();
        IReadOnlyDictionary<int, Logprob>?[]? prompt = null;
        if (r.PromptLogprobs is { } all && r.PromptLogprobsDone > r.PromptLogprobsSent)
        {
            prompt = all[r.PromptLogprobsSent..r.PromptLogprobsDone];
            r.PromptLogprobsSent = r.PromptLogprobsDone;
        }
        if (prompt is null && !r.IsFinished && outputs.All(o => o.TokenIds.Count == 0 && o.Text.Length == 0)) return null;
        return new RequestOutput(r.RequestId, r.Prompt, r.PromptTokenIds, prompt, outputs, r.IsFinished, r.LoraRequest) { Error = r.Error };
    }

    /// <summary>Everything so far (the cumulative kind, and the final output of the others).</summary>
    public static RequestOutput ToOutput(Request r)
    {
        var outputs = r.Sequences.Select(seq =>
        {
            var p = r.SamplingParams;
            string text = seq.IsFinished ? seq.Text : seq.Text[..StopChecker.VisibleLength(seq.Text, p.Stop)];
            return new CompletionOutput(seq.Index, text, seq.OutputTokens.ToArray(), p.Logprobs != null ? seq.CumulativeLogprob : null,
                p.Logprobs != null ? seq.Logprobs.ToArray() : null, seq.FinishReason) { StopReason = seq.StopReason };
        }).ToArray();
        return new RequestOutput(r.RequestId, r.Prompt, r.PromptTokenIds, r.PromptLogprobs?.ToArray(), outputs, r.IsFinished, r.LoraRequest) { Error = r.Error };
    }
}
