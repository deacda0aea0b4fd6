using LoraEngine.Tensors;
using LoraEngine.TestSupport;

namespace LoraEngine.Engine.Tests;

/// <summary>Engine arguments for tests: the fixture model on the configured device (CPU in CI).</summary>
internal static class EngineFactory
{
    public static string Device => Environment.GetEnvironmentVariable(ComputeDevice.EnvironmentVariable) is { Length: > 0 } d ? d : "cpu";

    /// <summary>The fixture model engine tests use: vim-tiny, or LORAENGINE_TEST_MODEL (e.g. vim-tiny-bf16 on a GPU machine).</summary>
    public static string DefaultModel => Environment.GetEnvironmentVariable("LORAENGINE_TEST_MODEL") is { Length: > 0 } m ? m : "vim-tiny";

    public static EngineArgs Args(string? model = null) => new()
    {
        Model = Fixtures.Model(model ?? DefaultModel),
        Device = Device,
        EnableLora = true,
        MaxLoras = 2,
        MaxCpuLoras = 3,
        MaxLoraRank = 16,
        MaxNumSeqs = 16,
        MaxNumBatchedTokens = 256,
        NumGpuBlocksOverride = 64,
        DisableLogStats = true,
    };

    public static readonly string[] Adapters = ["vim-upper", "vim-rot13", "vim-random-qv-r4"];

    public static LoraRequest Lora(string name) => new(name, Array.IndexOf(Adapters, name) + 1, Fixtures.Adapter(name));

    /// <summary>Steps until every request finished; returns the final output of each.</summary>
    public static Dictionary<string, RequestOutput> RunToCompletion(LlmEngine engine, int maxSteps = 10_000)
    {
        var done = new Dictionary<string, RequestOutput>();
        for (int i = 0; i < maxSteps && engine.HasUnfinishedRequests; i++)
            foreach (var o in engine.Step())
                if (o.Finished) done[o.RequestId] = o;
        if (engine.HasUnfinishedRequests) throw new TimeoutException($"requests still unfinished after {maxSteps} steps");
        return done;
    }
}
