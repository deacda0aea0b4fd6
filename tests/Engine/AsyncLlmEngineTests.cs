using Xunit;

namespace LoraEngine.Engine.Tests;

/// <summary>
/// The async engine: a non-blocking intake (adding and aborting never wait for a step), the step's parallel work on
/// the engine's own threads, and errors delivered to the streams they concern.
/// </summary>
public class AsyncLlmEngineTests
{
    static readonly SamplingParams Greedy = new() { Temperature = 0, MaxTokens = 8, IgnoreEos = true };

    static async Task<List<RequestOutput>> Drain(IAsyncEnumerable<RequestOutput> stream)
    {
        var all = new List<RequestOutput>();
        await foreach (var o in stream) all.Add(o);
        return all;
    }

    [Fact]
    public async Task Adding_and_aborting_return_while_a_step_is_in_progress()
    {
        using var engine = new AsyncLlmEngine(LlmEngine.FromEngineArgs(EngineFactory.Args()));
        var runner = FaultyRunner.Install(engine.Engine);
        using var hold = new ManualResetEventSlim();
        runner.Hold = hold;
        var first = Drain(engine.GenerateAsync("Vim is", Greedy, requestId: "first", cancellationToken: TestContext.Current.CancellationToken));
        Assert.True(runner.Entered.Wait(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken), "the first step started");

        // The step is held: intake must not wait for it (it used to block on the engine lock).
        var add = Task.Run(() => engine.GenerateAsync("To delete a line, type", Greedy, EngineFactory.Lora("vim-upper"), "second", TestContext.Current.CancellationToken), TestContext.Current.CancellationToken);
        var abort = Task.Run(() => engine.Abort("first"), TestContext.Current.CancellationToken);
        await Task.WhenAll(add, abort).WaitAsync(TimeSpan.FromSeconds(30), TestContext.Current.CancellationToken); // TimeoutException: they waited for the step
        hold.Set();

        var second = await Drain(await add);
        Assert.True(second[^1].Finished);
        Assert.Equal(8, second[^1].Outputs[0].TokenIds.Count);
        await first; // ended by the abort
        for (int i = 0; i < 600 && engine.Engine.HasUnfinishedRequests; i++) await Task.Delay(50, TestContext.Current.CancellationToken);
        Assert.Equal(0, engine.Engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumOpenStreams);
    }

    [Fact]
    public async Task Steps_run_on_the_engines_own_thread_not_the_thread_pool()
    {
        using var engine = new AsyncLlmEngine(LlmEngine.FromEngineArgs(EngineFactory.Args()));
        var runner = FaultyRunner.Install(engine.Engine);
        var threads = new System.Collections.Concurrent.ConcurrentBag<Thread>();
        runner.DuringStep = () => threads.Add(Thread.CurrentThread);
        await Drain(engine.GenerateAsync("Vim is", Greedy, cancellationToken: TestContext.Current.CancellationToken));
        await Drain(engine.GenerateAsync("Vim is", Greedy, EngineFactory.Lora("vim-upper"), cancellationToken: TestContext.Current.CancellationToken));
        Assert.Single(threads.Distinct());
        Assert.False(threads.First().IsThreadPoolThread);
        Assert.Equal("LoraEngine step loop", threads.First().Name);
    }

    [Fact]
    public async Task A_failed_request_ends_its_stream_with_an_error_and_the_others_finish()
    {
        using var engine = new AsyncLlmEngine(LlmEngine.FromEngineArgs(EngineFactory.Args()));
        var runner = FaultyRunner.Install(engine.Engine);
        runner.Poison = item => item.Adapter?.Name == "vim-rot13";
        var bad = Drain(engine.GenerateAsync("Vim is", Greedy, EngineFactory.Lora("vim-rot13"), cancellationToken: TestContext.Current.CancellationToken));
        var good = Drain(engine.GenerateAsync("Vim is", Greedy, EngineFactory.Lora("vim-upper"), cancellationToken: TestContext.Current.CancellationToken));
        var e = await Assert.ThrowsAsync<EngineGenerateException>(() => bad);
        Assert.Contains("non-finite logits", e.Message);
        Assert.True((await good)[^1].Finished);
        Assert.False(engine.Errored);
    }

    [Fact]
    public async Task A_device_failure_ends_every_stream_and_refuses_new_requests()
    {
        using var engine = new AsyncLlmEngine(LlmEngine.FromEngineArgs(EngineFactory.Args()));
        var runner = FaultyRunner.Install(engine.Engine);
        runner.Throw = new InvalidOperationException("device lost");
        runner.Hold = new ManualResetEventSlim(); // the failing step waits until all three are in (else the later ones are refused at once)
        var streams = Enumerable.Range(0, 3).Select(i => Drain(engine.GenerateAsync("Vim is", Greedy, cancellationToken: TestContext.Current.CancellationToken))).ToList();
        runner.Hold.Set();
        foreach (var s in streams) await Assert.ThrowsAsync<EngineDeadException>(() => s);
        Assert.True(engine.Errored);
        Assert.Throws<EngineDeadException>(engine.CheckHealth);
        Assert.Throws<EngineDeadException>(() => engine.GenerateAsync("Vim is", Greedy, cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(0, engine.NumOpenStreams);
    }

    [Fact]
    public async Task AbortAll_ends_open_streams_with_its_reason_and_refuses_new_requests()
    {
        using var engine = new AsyncLlmEngine(LlmEngine.FromEngineArgs(EngineFactory.Args()));
        var stream = engine.GenerateAsync("Vim is", Greedy with { MaxTokens = 400 }, cancellationToken: TestContext.Current.CancellationToken);
        var first = stream.GetAsyncEnumerator(TestContext.Current.CancellationToken);
        Assert.True(await first.MoveNextAsync());
        engine.AbortAll("The server is shutting down.");
        var e = await Assert.ThrowsAsync<EngineDeadException>(async () => { while (await first.MoveNextAsync()) { } });
        Assert.Equal("The server is shutting down.", e.Message);
        Assert.Throws<EngineDeadException>(() => engine.GenerateAsync("Vim is", Greedy, cancellationToken: TestContext.Current.CancellationToken));
        for (int i = 0; i < 600 && engine.Engine.HasUnfinishedRequests; i++) await Task.Delay(50, TestContext.Current.CancellationToken);
        Assert.Equal(0, engine.Engine.NumUsedKvBlocks);
    }
}
