using LoraEngine.Execution;

namespace LoraEngine.Engine.Tests;

/// <summary>
/// Wraps an engine's model runner to play the device's part in isolation tests: it can poison the logits of chosen
/// items (their rows come back non-finite), throw as a failing device would, or hold a step until released.
/// </summary>
internal sealed class FaultyRunner(IModelRunner inner) : IModelRunner
{
    /// <summary>Items whose logits come back as NaN (a diverged adapter, say).</summary>
    public Func<ExecutionItem, bool> Poison { get; set; } = _ => false;

    /// <summary>Thrown from the next Execute, as a device error would be.</summary>
    public Exception? Throw { get; set; }

    /// <summary>When set, Execute waits on it (a step in progress) and signals <see cref="Entered"/> first.</summary>
    public ManualResetEventSlim? Hold { get; set; }

    public ManualResetEventSlim Entered { get; } = new();

    public TimeSpan DeviceWait => inner.DeviceWait;

    /// <summary>Runs inside every step, where a kernel's host work would run.</summary>
    public Action? DuringStep { get; set; }

    public int Steps { get; private set; }

    public static FaultyRunner Install(LlmEngine engine)
    {
        var runner = new FaultyRunner(engine.Core.Runner);
        engine.Core.Runner = runner;
        return runner;
    }

    public IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items)
    {
        Steps++;
        Entered.Set();
        Hold?.Wait();
        DuringStep?.Invoke();
        if (Throw is { } e) throw e;
        var results = inner.Execute(items);
        return results.Select((r, i) => Poison(items[i]) ? Poisoned(r) : r).ToArray();
    }

    /// <summary>What the device reports for rows whose logits are NaN: not finite, no logprobs.</summary>
    static ExecutionResult Poisoned(ExecutionResult r) => new(
        r.Sampled is null ? null : new RowOutcome(r.Sampled.Token, Finite: false),
        r.Prompt?.Select(o => o is null ? null : new RowOutcome(o.Token, Finite: false)).ToArray(),
        r.LastLogits is null ? null : NaNs(r.LastLogits.Length),
        r.AllLogits is null ? null : NaNs(r.AllLogits.Length));

    static float[] NaNs(int n) => Enumerable.Repeat(float.NaN, n).ToArray();

    public void Dispose() => inner.Dispose();
}
