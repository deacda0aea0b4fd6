using LoraEngine.Models.Tokenization;
using LoraEngine.Sampling;

namespace LoraEngine.Core;

internal enum SequenceStatus
{
    Waiting,
    Running,
    Finished,
}

/// <summary>
/// One generated sequence and its mutable state: tokens, how many have their K/V in the cache, its blocks,
/// its sampling seed, and the incremental text. Requests with n &gt; 1 have n sequences sharing the prompt.
/// </summary>
internal sealed class Sequence
{
    TokenCounts? _counts;

    public Sequence(Request request, int index, long seed, StreamingDetokenizer detokenizer)
    {
        Request = request;
        Index = index;
        Seed = seed;
        Detokenizer = detokenizer;
        Tokens = new List<int>(request.PromptTokenIds);
    }

    public Request Request { get; }

    /// <summary>Index among the request's n sequences.</summary>
    public int Index { get; }

    /// <summary>The request's seed: with <see cref="Index"/> and the output position it keys every draw (Philox).</summary>
    public long Seed { get; }

    public StreamingDetokenizer Detokenizer { get; }

    /// <summary>Prompt followed by the generated tokens (append with <see cref="Append"/>).</summary>
    public List<int> Tokens { get; }

    /// <summary>Distinct tokens and output counts for penalties: built on first use, then kept current by <see cref="Append"/>.</summary>
    public TokenCounts Counts => _counts ??= new TokenCounts(Tokens, PromptLength);

    public void Append(int token)
    {
        Tokens.Add(token);
        _counts?.AddOutput(token);
    }

    public int PromptLength => Request.PromptTokenIds.Count;

    public int OutputLength => Tokens.Count - PromptLength;

    public IEnumerable<int> OutputTokens => Tokens.Skip(PromptLength);

    /// <summary>Tokens whose K/V are in the cache; the rest are fed in the next steps.</summary>
    public int NumComputed { get; set; }

    public List<int> BlockTable { get; } = new();

    /// <summary>
    /// The prefix-cache extra key its blocks are computed under (see <see cref="KvCacheManager"/>), set when it is
    /// admitted; null: its blocks are not offered to the cache (nothing would read them, or its adapter changed while it
    /// ran, so its K/V mixes two copies of the weights).
    /// </summary>
    public UInt128? CacheKey { get; set; }

    /// <summary>Leading blocks of <see cref="BlockTable"/> already taken from the prefix cache or offered to it.</summary>
    public int NumCachedBlocks { get; set; }

    /// <summary>Prefix-cache keys of its first full blocks, computed under <see cref="BlockHashesKey"/> (kept across preemption).</summary>
    public List<UInt128> BlockHashes { get; } = new();

    public UInt128 BlockHashesKey { get; set; }

    public SequenceStatus Status { get; set; } = SequenceStatus.Waiting;

    public string? FinishReason { get; set; }

    /// <summary>The stop string or stop token id that finished the sequence (vLLM's stop_reason).</summary>
    public object? StopReason { get; set; }

    /// <summary>Decoded output text (stop strings cut when finished).</summary>
    public string Text { get; set; } = "";

    public List<IReadOnlyDictionary<int, Logprob>> Logprobs { get; } = new();

    /// <summary>Output tokens (and their logprobs) and characters of <see cref="Text"/> already returned in delta outputs.</summary>
    public (int Tokens, int Text) DeltaSent { get; set; }

    public double CumulativeLogprob { get; set; }

    /// <summary>Steps this waiting sequence was passed over because the adapter limit was reached.</summary>
    public int SkippedSteps { get; set; }

    public bool IsFinished => Status == SequenceStatus.Finished;
}
