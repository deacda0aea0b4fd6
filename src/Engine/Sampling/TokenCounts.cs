namespace LoraEngine.Sampling;

/// <summary>
/// The tokens of a sequence as penalties need them: each distinct token of the prompt and the output, and how often
/// it was generated. Built once, on the first step that needs it, then kept current token by token — a step's edits
/// cost the distinct tokens, not the sequence length.
/// </summary>
internal sealed class TokenCounts
{
    readonly Dictionary<int, int> _outputCounts = new(); // token → times generated (0: prompt only)

    public TokenCounts(IReadOnlyList<int> tokens, int promptLength)
    {
        for (int i = 0; i < tokens.Count; i++)
        {
            if (i < promptLength) _outputCounts.TryAdd(tokens[i], 0);
            else AddOutput(tokens[i]);
        }
    }

    public void AddOutput(int token) => _outputCounts[token] = _outputCounts.GetValueOrDefault(token) + 1;

    /// <summary>Every token seen (prompt or output) with its output count.</summary>
    public IReadOnlyDictionary<int, int> OutputCounts => _outputCounts;
}
