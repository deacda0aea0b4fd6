namespace LoraEngine.Sampling;

/// <summary>
/// Stop strings over incrementally decoded text: finds the first stop string in the text, and while generation
/// goes on holds back any tail that could still become one, so a stop string is never emitted.
/// </summary>
internal static class StopChecker
{
    /// <summary>Index where the earliest stop string starts in <paramref name="text"/>, searching from <paramref name="from"/>; −1 if none.</summary>
    public static (int Index, string? Stop) Find(string text, IReadOnlyList<string>? stops, int from)
    {
        if (stops is null || stops.Count == 0) return (-1, null);
        int best = -1;
        string? which = null;
        foreach (var stop in stops)
        {
            int start = Math.Max(0, from - stop.Length + 1);
            int i = text.IndexOf(stop, start, StringComparison.Ordinal);
            if (i >= 0 && (best < 0 || i < best))
            {
                best = i;
                which = stop;
            }
        }
        return (best, which);
    }

    /// <summary>Length of the text that is safe to show: without a tail that is a proper prefix of a stop string.</summary>
    public static int VisibleLength(string text, IReadOnlyList<string>? stops)
    {
        if (stops is null) return text.Length;
        int hold = 0;
        foreach (var stop in stops)
            for (int len = Math.Min(stop.Length - 1, text.Length); len > hold; len--)
                if (text.AsSpan(text.Length - len).SequenceEqual(stop.AsSpan(0, len)))
                {
                    hold = len;
                    break;
                }
        return text.Length - hold;
    }
}
