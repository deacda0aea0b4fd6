using Xunit;

namespace LoraEngine.TestSupport;

/// <summary>Comparisons with a stated tolerance, reporting the worst element.</summary>
public static class Tolerance
{
    /// <summary>Relative L2 error ‖actual − expected‖ / max(‖expected‖, tiny).</summary>
    public static double RelativeError(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected)
    {
        if (actual.Length != expected.Length) throw new ArgumentException($"lengths differ: {actual.Length} vs {expected.Length}");
        double num = 0, den = 0;
        for (int i = 0; i < actual.Length; i++)
        {
            double d = (double)actual[i] - expected[i];
            num += d * d;
            den += (double)expected[i] * expected[i];
        }
        return Math.Sqrt(num) / Math.Max(Math.Sqrt(den), 1e-30);
    }

    /// <summary>Asserts |actual − expected| ≤ atol + rtol·|expected| element-wise, and that nothing is NaN.</summary>
    public static void AssertClose(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double atol, double rtol, string what = "")
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < actual.Length; i++)
        {
            double limit = atol + rtol * Math.Abs(expected[i]);
            if (!(Math.Abs((double)actual[i] - expected[i]) <= limit))
                Assert.Fail($"{what} element {i}: got {actual[i]}, expected {expected[i]} (atol {atol}, rtol {rtol}, length {actual.Length})");
        }
    }

    /// <summary>Asserts the relative L2 error is at most <paramref name="limit"/>.</summary>
    public static void AssertRelative(ReadOnlySpan<float> actual, ReadOnlySpan<float> expected, double limit, string what = "")
    {
        double err = RelativeError(actual, expected);
        if (!(err <= limit)) Assert.Fail($"{what} relative error {err:E3} exceeds {limit:E1}");
    }
}
