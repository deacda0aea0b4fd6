namespace LoraEngine.Sampling;

/// <summary>
/// The random source of one sequence: the same (seed, sequence index) gives the same draws in every process, alone or in
/// any batch (HashCode.Combine, used before, is randomised per process, so one --seed gave different text per run).
/// </summary>
internal static class SequenceRandom
{
    public static Random Create(long seed, int index)
    {
        // SplitMix64 of the pair; System.Random(int) is the seeded, process-independent generator.
        ulong z = unchecked((ulong)seed * 0x9E3779B97F4A7C15UL + (ulong)index + 1);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        z ^= z >> 31;
        return new Random((int)(z & 0x7FFFFFFF));
    }
}
