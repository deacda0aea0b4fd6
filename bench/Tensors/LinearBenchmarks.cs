using BenchmarkDotNet.Attributes;
using LoraEngine.Tensors;

namespace LoraEngine.Bench.Tensors;

/// <summary>
/// The same linear shapes under BenchmarkDotNet (in-process), for statistics beyond the median the plain runner
/// prints. Bandwidth ratios come from <see cref="LinearBench"/>, which measures the copy limit in the same run.
/// </summary>
[MemoryDiagnoser]
public class LinearBenchmarks
{
    ComputeDevice _device = null!;
    DeviceTensor _w = null!, _x = null!, _y = null!;

    [Params("4096x4096", "2048x8192")]
    public string Shape { get; set; } = "4096x4096";

    [Params(DType.F32, DType.BF16)]
    public DType WType { get; set; }

    [Params(1, 32)]
    public int Tokens { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _device = ComputeDevice.FromEnvironment();
        var parts = Shape.Split('x').Select(int.Parse).ToArray();
        var values = LinearBench.RandomFloats(parts[0] * parts[1], 0.02f);
        _w = WType == DType.F32 ? _device.Upload(values, parts[0], parts[1]) : _device.Upload<ushort>(HalfBits.FromFloat(WType, values), WType, parts[0], parts[1]);
        _x = _device.Upload(LinearBench.RandomFloats(Tokens * parts[1], 1), Tokens, parts[1]);
        _y = _device.Allocate(DType.F32, Tokens, parts[0]);
    }

    [Benchmark]
    public void Linear()
    {
        _device.MatMul.Linear(_y, _x, _w);
        _device.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _w.Dispose();
        _x.Dispose();
        _y.Dispose();
        _device.Dispose();
    }
}
