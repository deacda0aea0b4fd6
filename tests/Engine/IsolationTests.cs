using LoraEngine.Lora;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests;

/// <summary>
/// One request's fault never reaches another: adapters are read once when a request or a load arrives (never inside a
/// step), a bad output fails only its request, a device failure fails every request and stops the engine, and nothing
/// leaks either way.
/// </summary>
public sealed class IsolationTests : IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("loraengine-isolation-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    string CopyAdapter(string name, string? into = null)
    {
        string to = into ?? Path.Combine(_dir, name + "-" + Guid.NewGuid().ToString("N")[..6]);
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(Fixtures.Adapter(name))) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), overwrite: true);
        return to;
    }

    static readonly SamplingParams Greedy = new() { Temperature = 0, MaxTokens = 24, IgnoreEos = true };

    static string Reference(string adapter, string prompt = "The cursor moves")
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        engine.AddRequest("ref", prompt, Greedy, adapter == "base" ? null : EngineFactory.Lora(adapter));
        return EngineFactory.RunToCompletion(engine)["ref"].Outputs[0].Text;
    }

    [Fact]
    public void An_adapter_evicted_and_deleted_while_its_request_waits_is_never_read_again_by_a_step()
    {
        // One slot, so "victim" waits behind a running adapter; then it leaves the CPU cache and its files vanish.
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { MaxLoras = 1, MaxCpuLoras = 1 });
        string victimDir = CopyAdapter("vim-upper");
        engine.AddRequest("other", "The cursor moves", Greedy, EngineFactory.Lora("vim-rot13"));
        engine.AddRequest("base", "The cursor moves", Greedy);
        engine.AddRequest("victim", "The cursor moves", Greedy, new LoraRequest("victim", 50, victimDir));
        engine.Step();
        engine.AddLora(EngineFactory.Lora("vim-random-qv-r4")); // evicts "victim" (one CPU slot) and "other"
        Assert.DoesNotContain(50, engine.ListLoras());
        Directory.Delete(victimDir, recursive: true);

        var outputs = EngineFactory.RunToCompletion(engine);
        Assert.All(outputs.Values, o => Assert.Null(o.Error));
        Assert.Equal(Reference("vim-upper"), outputs["victim"].Outputs[0].Text); // its validated copy, read once
        Assert.Equal(Reference("vim-rot13"), outputs["other"].Outputs[0].Text);
        // A new request naming it reloads at AddRequest, outside any step: it fails alone, at once.
        var e = Assert.Throws<LoraException>(() => engine.AddRequest("late", "x", Greedy, new LoraRequest("victim", 50, victimDir)));
        Assert.Contains("No adapter found", e.Message);
        Assert.False(engine.HasUnfinishedRequests);
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
    }

    [Fact]
    public void Load_inplace_reaches_running_requests_from_their_next_step_and_every_later_request()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        string dir = CopyAdapter("vim-upper");
        var lora = new LoraRequest("mine", 40, dir);
        string upper = Reference("vim-upper"), rot13 = Reference("vim-rot13");
        engine.AddRequest("running", "The cursor moves", Greedy, lora);
        IReadOnlyList<int> before = [];
        for (int i = 0; i < 6; i++)
            foreach (var o in engine.Step()) before = o.Outputs[0].TokenIds;
        Assert.NotEmpty(before);

        CopyAdapter("vim-rot13", dir); // new weights on disk, then the in-place reload
        engine.AddLora(lora with { LoadInplace = true });
        engine.AddRequest("later", "The cursor moves", Greedy, lora);
        var outputs = EngineFactory.RunToCompletion(engine);

        Assert.Equal(rot13, outputs["later"].Outputs[0].Text);
        var running = outputs["running"].Outputs[0];
        Assert.Equal(before, running.TokenIds.Take(before.Count)); // tokens already generated stay
        Assert.NotEqual(upper, running.Text);                      // the rest came from the new weights
    }

    [Fact]
    public void Non_finite_logits_fail_only_their_request_and_are_counted()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var runner = FaultyRunner.Install(engine);
        runner.Poison = item => item.Adapter?.Name == "vim-rot13";
        engine.AddRequest("nan", "The cursor moves", Greedy with { Logprobs = 2 }, EngineFactory.Lora("vim-rot13"));
        engine.AddRequest("fine", "The cursor moves", Greedy with { N = 2, Seed = 3 }, EngineFactory.Lora("vim-upper"));
        engine.AddRequest("base", "The cursor moves", Greedy);
        var outputs = EngineFactory.RunToCompletion(engine);

        Assert.Contains("non-finite logits", outputs["nan"].Error);
        Assert.All(outputs["nan"].Outputs, c => Assert.Equal("error", c.FinishReason));
        Assert.Null(outputs["fine"].Error);
        Assert.Equal(Reference("vim-upper"), outputs["fine"].Outputs[0].Text);
        Assert.Equal(Reference("base"), outputs["base"].Outputs[0].Text);
        Assert.Equal(1, engine.Metrics.RequestsFailed);
        Assert.False(engine.Errored);
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
    }

    [Fact]
    public void A_device_failure_fails_every_request_and_stops_the_engine()
    {
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args());
        var runner = FaultyRunner.Install(engine);
        engine.AddRequest("a", "The cursor moves", Greedy, EngineFactory.Lora("vim-upper"));
        engine.AddRequest("b", "Vim is", Greedy);
        engine.Step();
        runner.Throw = new InvalidOperationException("CUDA error: an illegal memory access was encountered");
        var outputs = engine.Step();

        Assert.Equal(["a", "b"], outputs.Select(o => o.RequestId).Order());
        Assert.All(outputs, o => Assert.True(o.Finished && o.Error != null && !o.Error.Contains("CUDA")));
        Assert.True(engine.Errored);
        Assert.Throws<EngineDeadException>(engine.CheckHealth);
        Assert.Throws<EngineDeadException>(() => engine.AddRequest("c", "hi", Greedy));
        Assert.Empty(engine.Step());
        Assert.False(engine.HasUnfinishedRequests);
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
        Assert.Equal(2, engine.Metrics.RequestsFailed);
    }

    [Fact]
    public void No_step_touches_the_disk()
    {
        // Every adapter file of a running request disappears after AddRequest: steps go on regardless.
        using var engine = LlmEngine.FromEngineArgs(EngineFactory.Args() with { MaxCpuLoras = 2 });
        var dirs = new[] { CopyAdapter("vim-upper"), CopyAdapter("vim-rot13"), CopyAdapter("vim-random-qv-r4") };
        for (int i = 0; i < 3; i++) engine.AddRequest($"r{i}", "Vim is", Greedy, new LoraRequest($"a{i}", 60 + i, dirs[i]));
        foreach (var d in dirs) Directory.Delete(d, recursive: true);
        Assert.All(EngineFactory.RunToCompletion(engine).Values, o => Assert.Null(o.Error));
    }
}
