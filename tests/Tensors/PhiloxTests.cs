using Xunit;

namespace LoraEngine.Tensors.Tests;

public class PhiloxTests
{
    // Random123's published known-answer vectors for Philox4x32-10 (its tests/kat_vectors): any process, any device
    // that computes these bits draws the same uniforms for the same (seed, sequence, position, token).
    [Theory]
    [InlineData(0u, 0u, 0u, 0u, 0u, 0u, 0x6627e8d5u, 0xe169c58du, 0xbc57ac4cu, 0x9b00dbd8u)]
    [InlineData(0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0xffffffffu, 0x408f276du, 0x41c83b0eu, 0xa20bc7c6u, 0x6d5451fdu)]
    [InlineData(0x243f6a88u, 0x85a308d3u, 0x13198a2eu, 0x03707344u, 0xa4093822u, 0x299f31d0u, 0xd16cfe09u, 0x94fdccebu, 0x5001e420u, 0x24126ea1u)]
    public void Block_matches_the_random123_known_answers(uint c0, uint c1, uint c2, uint c3, uint k0, uint k1, uint e0, uint e1, uint e2, uint e3)
    {
        Assert.Equal(new PhiloxBlock(e0, e1, e2, e3), Philox.Block(new PhiloxBlock(c0, c1, c2, c3), k0, k1));
    }

    [Fact]
    public void Uniform_reads_the_block_of_its_four_ids_under_the_seed()
    {
        long seed = 0x0123456789ABCDEFL;
        var block = Philox.Block(new PhiloxBlock(5, 7, 3, 0), 0x89ABCDEFu, 0x01234567u);
        Assert.Equal(Philox.ToUniform(block.X2), Philox.Uniform(seed, sequence: 3, position: 7, index: 22)); // 22 = 4·5 + 2
        Assert.NotEqual(Philox.Uniform(seed, 3, 7, 22), Philox.Uniform(seed, 4, 7, 22));
        Assert.NotEqual(Philox.Uniform(seed, 3, 7, 22), Philox.Uniform(seed, 3, 8, 22));
        Assert.NotEqual(Philox.Uniform(seed, 3, 7, 22), Philox.Uniform(seed + 1, 3, 7, 22));
    }

    [Fact]
    public void Uniforms_are_strictly_inside_zero_one_and_evenly_spread()
    {
        Assert.Equal(0.5f / 8388608f, Philox.ToUniform(0));
        Assert.True(Philox.ToUniform(uint.MaxValue) < 1f);
        var u = Enumerable.Range(0, 40_000).Select(i => (double)Philox.Uniform(42, 0, i / 1000, i % 1000)).ToArray();
        Assert.All(u, x => Assert.InRange(x, 1e-9, 1 - 1e-9));
        Assert.InRange(u.Average(), 0.49, 0.51);
        Assert.InRange(u.Count(x => x < 0.1) / (double)u.Length, 0.09, 0.11);
    }
}
