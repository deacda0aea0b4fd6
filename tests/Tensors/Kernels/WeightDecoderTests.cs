using LoraEngine.Tensors.Kernels;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class WeightDecoderTests
{
    /// <summary>The integer F16 decode kernels use (no F16 type needed on the device) against .NET's conversion, every bit pattern.</summary>
    [Fact]
    public void F16_decodes_every_bit_pattern_as_the_hardware_conversion_does()
    {
        var decoder = new F16Decoder();
        for (int bits = 0; bits <= ushort.MaxValue; bits++)
        {
            float expected = (float)BitConverter.UInt16BitsToHalf((ushort)bits), actual = decoder.Decode((ushort)bits);
            Assert.True(BitConverter.SingleToUInt32Bits(expected) == BitConverter.SingleToUInt32Bits(actual),
                $"0x{bits:X4}: {actual} (0x{BitConverter.SingleToUInt32Bits(actual):X8}), expected {expected} (0x{BitConverter.SingleToUInt32Bits(expected):X8})");
        }
    }
}
