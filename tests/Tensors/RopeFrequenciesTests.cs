using Xunit;

namespace LoraEngine.Tensors.Tests;

public class RopeFrequenciesTests
{
    [Fact]
    public void Default_frequencies_are_theta_powers()
    {
        var inv = RopeFrequencies.InverseFrequencies(8, 10000, null);
        float[] expected = [1f, 0.1f, 0.01f, 0.001f];
        for (int i = 0; i < 4; i++) Assert.Equal(expected[i], inv[i], 1e-7f);
    }

    [Fact]
    public void Llama3_scaling_keeps_high_frequencies_divides_low_ones_and_blends_between()
    {
        // Llama 3.1: theta 500000, head_dim 128, factor 8, low 1, high 4, original 8192.
        var plain = RopeFrequencies.InverseFrequencies(128, 500000, null);
        var scaled = RopeFrequencies.InverseFrequencies(128, 500000, new Llama3RopeScaling(8, 1, 4, 8192));
        for (int i = 0; i < 64; i++)
        {
            double wavelen = 2 * Math.PI / plain[i];
            if (wavelen < 8192 / 4.0) Assert.Equal(plain[i], scaled[i]);                     // high frequency: kept
            else if (wavelen > 8192 / 1.0) Assert.Equal(plain[i] / 8, scaled[i], 1e-12);     // low frequency: divided
            else
            {
                double smooth = (8192 / wavelen - 1) / (4 - 1);
                Assert.Equal((1 - smooth) * plain[i] / 8 + smooth * plain[i], scaled[i], 1e-9);
                Assert.InRange(scaled[i], plain[i] / 8, plain[i]);
            }
        }
        Assert.Equal(plain[0], scaled[0]);
        Assert.Equal(plain[63] / 8, scaled[63], 1e-12);
    }

    [Fact]
    public void Odd_head_dim_is_refused()
    {
        Assert.Equal("headDim", Assert.Throws<ArgumentOutOfRangeException>(() => RopeFrequencies.InverseFrequencies(7, 10000, null)).ParamName);
    }
}
