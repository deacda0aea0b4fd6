using LoraEngine.Execution;

namespace LoraEngine.Server.Tests;

/// <summary>
/// Plays the device in lifecycle tests: the engine's model runner throws from its next step once <see cref="Fail"/> is
/// set (a device error), and takes at least <see cref="StepDelay"/> per step (a long request stays long under any load).
/// </summary>
internal sealed class TestRunner(IModelRunner inner) : IModelRunner
{
    public volatile bool Fail;

    public TimeSpan StepDelay { get; set; }

    public TimeSpan DeviceWait => inner.DeviceWait;

    public static TestRunner Install(LlmEngine engine)
    {
        var runner = new TestRunner(engine.Core.Runner);
        engine.Core.Runner = runner;
        return runner;
    }

    public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
    {
        if (Fail) throw new InvalidOperationException("CUDA error 700: an illegal memory access was encountered");
        if (StepDelay > TimeSpan.Zero) Thread.Sleep(StepDelay);
        return inner.Execute(items);
    }

    public void Dispose() => inner.Dispose();
}
