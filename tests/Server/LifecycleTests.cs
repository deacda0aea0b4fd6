using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>A server of its own per test: a device failure turns /health to 503; shutdown drains, then aborts with an error event.</summary>
public sealed class LifecycleTests : IAsyncLifetime
{
    sealed class QuickDrain : ServerFixture
    {
        protected override ServerOptions Options(ServerOptions defaults) => defaults with { DrainTimeout = TimeSpan.FromSeconds(8) }; // room for 8 tokens on a loaded 2-core machine
    }

    readonly QuickDrain _server = new();

    static CancellationToken Ct => TestContext.Current.CancellationToken;

    public ValueTask InitializeAsync() => _server.InitializeAsync();

    public ValueTask DisposeAsync() => _server.DisposeAsync();

    static object Stream(string model, int tokens) => new { model, prompt = "Vim is", max_tokens = tokens, ignore_eos = true, stream = true };

    [Fact]
    public async Task A_device_failure_ends_every_stream_with_an_error_event_and_health_turns_503()
    {
        using var http = _server.Http();
        var runner = TestRunner.Install(_server.State.Engine.Engine);
        Assert.Equal(HttpStatusCode.OK, (await http.GetAsync("/health", Ct)).StatusCode);
        var streams = new[] { "vim-upper", "vim-tiny-bf16", "vim-rot13" }.Select(m => Sse.Post(http, "/v1/completions", Stream(m, 400), Ct)).ToList();
        var whole = http.PostAsJsonAsync("/v1/completions", new { prompt = "Vim is", max_tokens = 400, ignore_eos = true }, Ct);
        for (int i = 0; i < 3000 && _server.State.Engine.NumOpenStreams < 4; i++) await Task.Delay(10, Ct);
        runner.Fail = true;

        foreach (var s in await Task.WhenAll(streams))
        {
            // Streams that had sent a chunk end with an error event and [DONE]; one failed before its first chunk gets a 503.
            var error = s.Done ? s.Error!.Value : JsonDocument.Parse(s.Body).RootElement.GetProperty("error");
            Assert.True(s.Done || s.Status == HttpStatusCode.ServiceUnavailable, $"{s.Status} {s.Body} {string.Join(" | ", s.Events.TakeLast(3))}");
            Assert.Equal("ServiceUnavailableError", error.GetProperty("type").GetString());
            Assert.DoesNotContain("CUDA", error.GetProperty("message").GetString());
        }
        var response = await whole;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, response.StatusCode);
        var health = await http.GetAsync("/health", Ct);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, health.StatusCode);
        Assert.Equal("ServiceUnavailableError", JsonDocument.Parse(await health.Content.ReadAsStringAsync(Ct)).RootElement.GetProperty("error").GetProperty("type").GetString());
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.PostAsJsonAsync("/v1/completions", new { prompt = "Vim is", max_tokens = 2 }, Ct)).StatusCode);
        Assert.Equal(0, _server.State.Engine.Engine.NumUsedKvBlocks);
        Assert.True(_server.State.Engine.Engine.Metrics.RequestsFailed >= 1); // those already in the engine; the rest were refused on arrival
        Assert.Contains("loraengine_request_failure_total{model_name=\"vim-tiny-bf16\"} 5", await http.GetStringAsync("/metrics", Ct));
    }

    [Fact]
    public async Task Shutdown_stops_accepting_lets_short_requests_finish_and_aborts_the_rest_with_an_error_event()
    {
        using var http = _server.Http();
        TestRunner.Install(_server.State.Engine.Engine).StepDelay = TimeSpan.FromMilliseconds(25); // 480 tokens: over 12 s, past the 8 s drain
        var longStream = Sse.Post(http, "/v1/completions", Stream("vim-upper", 480), Ct);
        var shortStream = Sse.Post(http, "/v1/completions", Stream("vim-tiny-bf16", 8), Ct);
        var longWhole = http.PostAsJsonAsync("/v1/completions", new { prompt = "Vim is", max_tokens = 480, ignore_eos = true }, Ct);
        for (int i = 0; i < 3000 && _server.State.Engine.NumOpenStreams < 3; i++) await Task.Delay(10, Ct);
        Assert.Equal(3, _server.State.Engine.NumOpenStreams);

        // Shutdown begins (SIGTERM: the host's console lifetime calls StopApplication, whose stopping event starts the
        // drain): new requests and /health get 503 at once.
        var drained = _server.State.BeginDrain();
        var refused = await http.PostAsJsonAsync("/v1/completions", new { prompt = "Vim is", max_tokens = 2 }, Ct);
        Assert.Equal(HttpStatusCode.ServiceUnavailable, refused.StatusCode);
        Assert.Contains("shutting down", await refused.Content.ReadAsStringAsync(Ct));
        Assert.Equal(HttpStatusCode.ServiceUnavailable, (await http.GetAsync("/health", Ct)).StatusCode);
        var stopping = _server.App.StopAsync(Ct);

        var s = await shortStream;
        Assert.True(s.Done && s.Error is null, $"a request that finishes within the drain time ends normally: {s.Status} {s.Body} {string.Join(" | ", s.Events.TakeLast(3))}");
        var l = await longStream;
        Assert.True(l.Done, "the aborted stream still ends with [DONE]");
        Assert.Contains("shutting down", l.Error!.Value.GetProperty("message").GetString());
        var w = await longWhole;
        Assert.Equal(HttpStatusCode.ServiceUnavailable, w.StatusCode);
        Assert.Contains("shutting down", await w.Content.ReadAsStringAsync(Ct));
        await drained.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        await stopping.WaitAsync(TimeSpan.FromSeconds(60), Ct);
        Assert.Equal(0, _server.State.Engine.NumOpenStreams);
    }
}
