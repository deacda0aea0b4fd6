using LoraEngine.Lora;

namespace LoraEngine.Core;

/// <summary>A request as the engine tracks it: its prompt, parameters, adapter and sequences (vLLM's sequence group).</summary>
internal sealed class Request
{
    public Request(string requestId, string? prompt, IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest, long arrival,
        string? cacheSalt = null)
    {
        RequestId = requestId;
        Prompt = prompt;
        PromptTokenIds = promptTokenIds;
        SamplingParams = samplingParams;
        LoraRequest = loraRequest;
        Arrival = arrival;
        CacheSalt = cacheSalt;
        if (samplingParams.PromptLogprobs != null)
        {
            PromptLogprobs = new IReadOnlyDictionary<int, Logprob>?[promptTokenIds.Count];
        }
    }

    public string RequestId { get; }

    public string? Prompt { get; }

    public IReadOnlyList<int> PromptTokenIds { get; }

    public SamplingParams SamplingParams { get; }

    public LoraRequest? LoraRequest { get; }

    /// <summary>Adapter id, 0 for the base model.</summary>
    public int LoraId => LoraRequest?.LoraIntId ?? 0;

    /// <summary>
    /// The validated host copy of the adapter the request runs with (null: the base model). Every unfinished request of
    /// one adapter id holds the same copy, the newest read (see EngineCore), so a step has one copy per id.
    /// </summary>
    public LoraAdapter? Adapter { get; set; }

    /// <summary>Why the engine failed the request, if it did (the client sees it).</summary>
    public string? Error { get; set; }

    /// <summary>vLLM's cache_salt: only requests with the same salt share prefix-cache blocks (null: those without one).</summary>
    public string? CacheSalt { get; }

    /// <summary>Admission order; smaller is older.</summary>
    public long Arrival { get; }

    public List<Sequence> Sequences { get; } = new();

    /// <summary>Prompt logprobs by position (null at position 0 and until computed), when asked for.</summary>
    public IReadOnlyDictionary<int, Logprob>?[]? PromptLogprobs { get; }

    /// <summary>Prompt positions whose logprobs are filled (survives preemption, which recomputes the prefill).</summary>
    public int PromptLogprobsDone { get; set; } = 1;

    /// <summary>Prompt positions whose logprobs delta outputs have returned.</summary>
    public int PromptLogprobsSent { get; set; }

    public DateTime ArrivalTime { get; } = DateTime.UtcNow;

    public DateTime? FirstTokenTime { get; set; }

    public DateTime? LastTokenTime { get; set; }

    public bool IsFinished => Sequences.All(s => s.IsFinished);
}
