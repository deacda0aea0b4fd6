using ILGPU;
using ILGPU.Algorithms;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The per-token formulas of sampling, one copy shared by the kernels, the CPU device's host implementation and the
/// reference, so every path decides the same way. Order of candidates is the 64-bit <see cref="Key"/> (value desc, then
/// id asc); masses for top-p are fixed-point integers, so sums of them are exact and independent of summation order —
/// the kept set depends on the row alone, never on how a device splits the work or what else is in the batch.
/// </summary>
internal static class SampleMath
{
    /// <summary>Probability mass scale: e^(v − max) in units of 2⁻³², so a row's total stays below 2⁵³ (exact in a double) up to 2²¹ tokens.</summary>
    public const float MassScale = 4294967296f;

    /// <summary>Float bits mapped to a uint whose unsigned order is the float order (NaN excluded by callers).</summary>
    public static uint Ordered(float v)
    {
        uint bits = (uint)Interop.FloatAsInt(v);
        return (bits & 0x80000000u) != 0 ? ~bits : bits | 0x80000000u;
    }

    /// <summary>Sort key: larger value first, then lower id: (Ordered(v) &lt;&lt; 32) | (2³² − 1 − id).</summary>
    public static ulong Key(float v, int id) => ((ulong)Ordered(v) << 32) | (uint)~id;

    /// <summary>The logit a sampled row's kernels see for one edited token: bias, then repetition, then presence and frequency (vLLM's order).</summary>
    /// <param name="raw">the model's logit</param>
    /// <param name="bias">logit_bias plus −∞ for a ban</param>
    /// <param name="seen">the token is in the prompt or the output (repetition penalty)</param>
    /// <param name="outputCount">times the token was generated (presence, frequency)</param>
    /// <param name="repetition">repetition penalty (1: off)</param>
    /// <param name="presence">presence penalty</param>
    /// <param name="frequency">frequency penalty</param>
    public static float Edit(float raw, float bias, bool seen, int outputCount, float repetition, float presence, float frequency)
    {
        float v = raw + bias;
        if (seen && repetition != 1f) v = v > 0 ? v / repetition : v * repetition;
        if (outputCount > 0) v -= frequency * outputCount + presence;
        return v;
    }

    /// <summary>e^(v − max): the probability of a token relative to the row's most likely one.</summary>
    public static float Relative(float v, float max) => XMath.Exp(v - max);

    /// <summary>A token's mass for top-p in units of 2⁻³² of the top token's (whose mass is exactly 2³²).</summary>
    public static ulong Mass(float relative) => (ulong)(relative * MassScale);

    /// <summary>The mass top-p must reach: ⌈p · total⌉ (at least 1), computed in double the same way everywhere.</summary>
    public static ulong TopPTarget(float topP, ulong total)
    {
        double exact = topP * (double)total;
        ulong target = (ulong)exact;
        if (target < exact) target++;
        return target < 1 ? 1 : target;
    }

    /// <summary>Neither NaN nor ±∞ (plain comparisons: the same on every backend).</summary>
    public static bool IsFinite(float x) => x >= -float.MaxValue && x <= float.MaxValue;

    /// <summary>Whether a finite-or-−∞ value survives min_p: e^(v − max) ≥ min_p (min_p ≤ 0: everything with mass).</summary>
    public static bool PassesMinP(float v, float max, float minP) => minP <= 0 || Relative(v, max) >= minP;

    /// <summary>
    /// Whether token <paramref name="i"/> with scaled logit <paramref name="v"/> may be drawn: finite or +∞ (a banned
    /// −∞ or a NaN never), kept by min_p, and at or above the row's threshold key <paramref name="floor"/>.
    /// </summary>
    public static bool Candidate(float v, int i, float max, float minP, ulong floor) =>
        v >= -float.MaxValue && PassesMinP(v, max, minP) && Key(v, i) >= floor;

    /// <summary>
    /// The exponential race (Gumbel-max) score of a token: v − log(−log u). The argmax of it over the candidates is a
    /// draw from softmax(v) restricted to them; the exponential E = −log u is floored so u near 1 cannot give log 0.
    /// </summary>
    public static float Score(float v, float u)
    {
        float e = XMath.Max(-XMath.Log(u), 1e-30f);
        return v - XMath.Log(e);
    }

    /// <summary>(value desc, index asc) ordering of a candidate against the best so far; NaN never wins.</summary>
    public static bool Better(float v, int i, float bestV, int bestI) => v > bestV || (v == bestV && i < bestI);

    /// <summary>The best (value, index) over the warp by <see cref="Better"/>, in a fixed butterfly order (every lane gets it).</summary>
    public static void WarpBest<TLanes>(ref float best, ref int bestIndex) where TLanes : struct, ILanes
    {
        TLanes lanes = default;
        for (int offset = 16; offset > 0; offset >>= 1)
        {
            float v = lanes.Xor(best, offset);
            int i = lanes.Xor(bestIndex, offset);
            if (Better(v, i, best, bestIndex))
            {
                best = v;
                bestIndex = i;
            }
        }
    }
}
