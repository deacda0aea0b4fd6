using System.Buffers.Binary;
using System.Text;
using FsCheck.Xunit;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests.Safetensors;

public class SafetensorsFileTests
{
    static string TempFile() => Path.Combine(Path.GetTempPath(), "loraengine-st-" + Guid.NewGuid().ToString("N") + ".safetensors");

    static byte[] ValidFile(int seed)
    {
        var rnd = new RandomData(seed);
        string path = TempFile();
        try
        {
            var tensors = new List<(string, string, long[], byte[])>();
            for (int i = 0; i < rnd.Int(1, 4); i++)
            {
                int rows = rnd.Int(0, 4), cols = rnd.Int(1, 5);
                var dtype = rnd.WeightType();
                tensors.Add(SafetensorsWriter.Tensor($"t{i}.weight", rnd.Floats(rows * cols), dtype, rows, cols));
            }
            SafetensorsWriter.Write(path, tensors, new Dictionary<string, string> { ["format"] = "pt" });
            return File.ReadAllBytes(path);
        }
        finally
        {
            File.Delete(path);
        }
    }

    /// <summary>Opens the bytes and reads every tensor; returns null on success, or the exception type that escaped.</summary>
    static Type? OpenAndReadAll(byte[] bytes)
    {
        string path = TempFile();
        File.WriteAllBytes(path, bytes);
        try
        {
            using var file = SafetensorsFile.Open(path);
            foreach (var (name, info) in file.Tensors)
            {
                var data = file.GetBytes(name);
                Assert.Equal(info.Length, data.Length);
                if (info.DType is "F32" or "F16" or "BF16") Assert.Equal(info.ElementCount, file.ReadFloats(name).Length);
            }
            return null;
        }
        catch (Exception e)
        {
            return e.GetType();
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Round_trips_values_dtypes_and_metadata()
    {
        string path = TempFile();
        try
        {
            float[] values = [1f, -2.5f, 3.25f, 0f, 1e-3f, 65504f];
            SafetensorsWriter.Write(path, [
                SafetensorsWriter.Tensor("a", values, DType.F32, 2, 3),
                SafetensorsWriter.Tensor("b", values, DType.BF16, 6),
                SafetensorsWriter.Tensor("c", values, DType.F16, 3, 2),
            ], new Dictionary<string, string> { ["format"] = "pt" });
            using var file = SafetensorsFile.Open(path);
            Assert.Equal(values, file.ReadFloats("a"));
            Assert.Equal(HalfBits.FromFloat(DType.BF16, values).Select(HalfBits.Bf16ToFloat), file.ReadFloats("b"));
            Assert.Equal(HalfBits.FromFloat(DType.F16, values).Select(HalfBits.F16ToFloat), file.ReadFloats("c"));
            Assert.Equal(new long[] { 3, 2 }, file.Info("c").Shape);
            Assert.Equal("pt", file.Metadata["format"]);
            Assert.Throws<KeyNotFoundException>(() => file.GetBytes("missing"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void Sharded_checkpoint_holds_the_same_tensors_bit_for_bit()
    {
        using var single = SafetensorsCheckpoint.Open(Fixtures.Model("vim-tiny"));
        using var sharded = SafetensorsCheckpoint.Open(Fixtures.Model("vim-tiny-sharded"));
        Assert.Equal(single.Names.Order(), sharded.Names.Order());
        foreach (var name in single.Names) Assert.True(single.GetBytes(name).SequenceEqual(sharded.GetBytes(name)), name);
    }

    public static TheoryData<string, string> BadHeaders => new()
    {
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 4]}}", "needs 8" },
        { "{\"a\": {\"dtype\": \"Q4\", \"shape\": [1], \"data_offsets\": [0, 4]}}", "unknown dtype" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "gap" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [4, 8]}}", "duplicate" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}, \"b\": {\"dtype\": \"F32\", \"shape\": [1], \"data_offsets\": [0, 4]}}", "overlaps" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [4611686018427387904, 4], \"data_offsets\": [0, 4]}}", "overflows" },
        { "[1, 2]", "not a JSON object" },
        { "{\"a\": {\"dtype\": \"F32\"", "JSON" },
        { "{\"a\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]}}", "outside" },
    };

    [Theory]
    [MemberData(nameof(BadHeaders))]
    public void Bad_headers_name_the_file_and_the_fault(string header, string fault)
    {
        var headerBytes = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + headerBytes.Length + 4];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)headerBytes.Length);
        headerBytes.CopyTo(bytes, 8);
        string path = TempFile();
        File.WriteAllBytes(path, bytes);
        try
        {
            var e = Assert.Throws<InvalidDataException>(() => SafetensorsFile.Open(path).Dispose());
            Assert.Contains(path, e.Message);
            Assert.Contains(fault, e.Message);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void A_huge_header_length_is_refused_before_reading()
    {
        var bytes = new byte[64];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, 200_000_000);
        Assert.Equal(typeof(InvalidDataException), OpenAndReadAll(bytes));
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, ulong.MaxValue);
        Assert.Equal(typeof(InvalidDataException), OpenAndReadAll(bytes));
        Assert.Equal(typeof(InvalidDataException), OpenAndReadAll(new byte[5]));
    }

    /// <summary>
    /// Random corruption of valid files (byte flips in the length prefix and header, truncation, appended bytes,
    /// header rewrites): opening and reading every tensor either works within bounds or throws InvalidDataException.
    /// 3 properties × 200 cases.
    /// </summary>
    [Property(MaxTest = 200)]
    public void Flipped_bytes_only_ever_give_InvalidDataException(int seed)
    {
        var rnd = new Random(seed);
        var bytes = ValidFile(seed);
        int headerEnd = 8 + (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        for (int i = 0; i < rnd.Next(1, 4); i++) bytes[rnd.Next(0, headerEnd)] ^= (byte)(1 << rnd.Next(8));
        var escaped = OpenAndReadAll(bytes);
        Assert.True(escaped is null || escaped == typeof(InvalidDataException), $"{escaped} escaped");
    }

    [Property(MaxTest = 200)]
    public void Truncated_or_extended_files_only_ever_give_InvalidDataException(int seed)
    {
        var rnd = new Random(seed);
        var bytes = ValidFile(seed);
        var mutated = rnd.Next(2) == 0 ? bytes[..rnd.Next(0, bytes.Length)] : [.. bytes, .. new byte[rnd.Next(1, 9)]];
        var escaped = OpenAndReadAll(mutated);
        Assert.True(escaped is null || escaped == typeof(InvalidDataException), $"{escaped} escaped");
        if (mutated.Length != bytes.Length) Assert.Equal(typeof(InvalidDataException), escaped);
    }

    [Property(MaxTest = 200)]
    public void Rewritten_headers_only_ever_give_InvalidDataException(int seed)
    {
        var rnd = new Random(seed);
        var bytes = ValidFile(seed);
        int headerLength = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        string header = Encoding.UTF8.GetString(bytes, 8, headerLength);
        string[] swaps = ["\"F32\"", "\"BF16\"", "\"I64\"", "\"X9\"", "[0, 0]", "[1, 1]", "-1", "99999999999", "\"shape\"", "\"dtype\"", "{}", "null", "\"__metadata__\""];
        for (int i = 0; i < rnd.Next(1, 3); i++)
        {
            int at = rnd.Next(0, header.Length);
            int len = rnd.Next(0, Math.Min(8, header.Length - at));
            header = header.Remove(at, len).Insert(at, swaps[rnd.Next(swaps.Length)]);
        }
        var newHeader = Encoding.UTF8.GetBytes(header);
        var mutated = new byte[8 + newHeader.Length + bytes.Length - 8 - headerLength];
        BinaryPrimitives.WriteUInt64LittleEndian(mutated, (ulong)newHeader.Length);
        newHeader.CopyTo(mutated, 8);
        bytes.AsSpan(8 + headerLength).CopyTo(mutated.AsSpan(8 + newHeader.Length));
        var escaped = OpenAndReadAll(mutated);
        Assert.True(escaped is null || escaped == typeof(InvalidDataException), $"{escaped} escaped");
    }
}
