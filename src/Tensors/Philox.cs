namespace LoraEngine.Tensors;

/// <summary>Four 32-bit words: one Philox counter, or one block of its output.</summary>
public readonly record struct PhiloxBlock(uint X0, uint X1, uint X2, uint X3);

/// <summary>
/// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a counter-based generator, so
/// the draw for any (key, counter) is computed directly — no state to carry from step to step, no order of draws.
/// Only integer multiplies, xors and adds: the one implementation runs in ILGPU kernels (CUDA, OpenCL, the CPU
/// accelerator) and on the host, and gives the same bits everywhere. Output matches Random123's known-answer vectors.
/// </summary>
public static class Philox
{
    const uint M0 = 0xD2511F53, M1 = 0xCD9E8D57; // round multipliers
    const uint W0 = 0x9E3779B9, W1 = 0xBB67AE85; // key schedule (golden ratio, √3 − 1)

    /// <summary>Ten rounds of Philox4x32 on <paramref name="counter"/> under the 64-bit key (k0, k1).</summary>
    public static PhiloxBlock Block(PhiloxBlock counter, uint k0, uint k1)
    {
        uint x0 = counter.X0, x1 = counter.X1, x2 = counter.X2, x3 = counter.X3;
        for (int round = 0; round < 10; round++)
        {
            ulong p0 = (ulong)M0 * x0, p1 = (ulong)M1 * x2;
            uint y0 = (uint)(p1 >> 32) ^ x1 ^ k0, y2 = (uint)(p0 >> 32) ^ x3 ^ k1;
            x1 = (uint)p1;
            x3 = (uint)p0;
            x0 = y0;
            x2 = y2;
            k0 += W0;
            k1 += W1;
        }
        return new PhiloxBlock(x0, x1, x2, x3);
    }

    /// <summary>
    /// The uniform draw in (0, 1) for vocabulary entry <paramref name="index"/> at output <paramref name="position"/> of
    /// sequence <paramref name="sequence"/> under <paramref name="seed"/>: word index % 4 of
    /// <see cref="Draws"/>(seed, sequence, position, index / 4), through <see cref="ToUniform"/>. A pure function of its
    /// arguments: the same in any batch, process or device.
    /// </summary>
    public static float Uniform(long seed, int sequence, int position, int index) =>
        ToUniform(Word(Draws(seed, sequence, position, index >> 2), index & 3));

    /// <summary>
    /// The block that holds the draws of vocabulary entries 4·quad … 4·quad + 3: key = the seed's two halves,
    /// counter = (quad, position, sequence, 0).
    /// </summary>
    public static PhiloxBlock Draws(long seed, int sequence, int position, int quad) =>
        Block(new PhiloxBlock((uint)quad, (uint)position, (uint)sequence, 0), (uint)seed, (uint)((ulong)seed >> 32));

    /// <summary>Word <paramref name="lane"/> (0–3) of a block.</summary>
    public static uint Word(PhiloxBlock block, int lane) => lane switch { 0 => block.X0, 1 => block.X1, 2 => block.X2, _ => block.X3 };

    /// <summary>(b + ½) / 2²³ for the top 23 bits b of <paramref name="word"/>: exact in a float, never 0 or 1.</summary>
    public static float ToUniform(uint word) => ((word >> 9) + 0.5f) * (1f / 8388608f);
}
