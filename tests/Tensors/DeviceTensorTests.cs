using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests;

public class DeviceTensorTests
{
    [Fact]
    public void Round_trips_slices_and_reshapes()
    {
        var d = TestDevices.Configured;
        using var t = d.Upload(Enumerable.Range(0, 12).Select(i => (float)i).ToArray(), 3, 4);
        Assert.Equal(new float[] { 4, 5, 6, 7 }, t.Slice(1, 1).ToArray<float>());
        Assert.Equal(new[] { 2, 6 }, t.Reshape(2, 6).Shape.ToArray());
        t.Slice(2, 1).Clear();
        Assert.Equal(new float[4], t.ToArray<float>()[8..]);
        using var bits = d.Upload<ushort>(HalfBits.FromFloat(DType.BF16, [1.5f, -2f]), DType.BF16, 2);
        Assert.Equal(new[] { 1.5f, -2f }, bits.ToFloatArray());
    }

    [Fact]
    public void Wrong_sizes_and_element_types_are_refused()
    {
        var d = TestDevices.Cpu;
        using var t = d.Zeros(DType.F32, 2, 2);
        Assert.Equal("data", Assert.Throws<ArgumentException>(() => t.CopyFrom<float>(new float[3])).ParamName);
        Assert.Equal("data", Assert.Throws<ArgumentException>(() => t.CopyFrom<int>(new int[4])).ParamName);
        Assert.Equal("shape", Assert.Throws<ArgumentException>(() => t.Reshape(3)).ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Slice(1, 2));
        Assert.Equal("device", Assert.Throws<ArgumentException>(() => ComputeDevice.Create("tpu")).ParamName);
    }

    [Fact]
    public void Bf16_rounding_is_round_to_nearest_even()
    {
        Assert.Equal(0x3F80, HalfBits.FloatToBf16(1f));
        Assert.Equal(0x3F80, HalfBits.FloatToBf16(BitConverter.Int32BitsToSingle(0x3F808000))); // tie → even
        Assert.Equal(0x3F82, HalfBits.FloatToBf16(BitConverter.Int32BitsToSingle(0x3F818000))); // tie → even (up)
        Assert.True(float.IsNaN(HalfBits.Bf16ToFloat(HalfBits.FloatToBf16(float.NaN))));
    }
}
