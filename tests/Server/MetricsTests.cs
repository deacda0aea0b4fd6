using System.Net.Http.Json;
using System.Text.RegularExpressions;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>
/// /metrics after clients go away (gauges back to zero without another request, every disconnect counted as aborted), and
/// its prefix-cache counters, which also show what cache_salt shares.
/// </summary>
public class MetricsTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    static double Metric(string text, string name) =>
        double.Parse(Regex.Match(text, $@"^{name}\{{[^}}]*\}} (\S+)$", RegexOptions.Multiline).Groups[1].Value, System.Globalization.CultureInfo.InvariantCulture);

    [Fact]
    public async Task Disconnects_leave_gauges_at_zero_and_count_as_aborted_streaming_or_not()
    {
        // The fixture's server is shared with the other tests of this class, which may have run first: count from here.
        long startedBefore = Interlocked.Read(ref server.State.RequestsStarted);
        double abortedBefore, succeededBefore;
        using (var before = server.Http())
        {
            string text = await before.GetStringAsync("/metrics", Ct);
            (abortedBefore, succeededBefore) = (Metric(text, "loraengine_request_aborted_total"), Metric(text, "loraengine_request_success_total"));
        }
        var clients = Enumerable.Range(0, 12).Select(async i =>
        {
            using var http = server.Http();
            using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
            bool stream = i % 3 != 0;
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = JsonContent.Create(new { model = i % 2 == 0 ? "vim-upper" : "vim-tiny-bf16", prompt = "Vim is", max_tokens = 400, ignore_eos = true, stream }),
            };
            var sending = http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            for (int w = 0; w < 12000 && Interlocked.Read(ref server.State.RequestsStarted) - startedBefore < 12; w++) await Task.Delay(10, Ct); // all twelve are being answered
            if (stream)
            {
                using var response = await sending;
                using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
                for (int lines = 0; lines < 3 && await reader.ReadLineAsync(cts.Token) != null; lines++) { }
            }
            cts.Cancel(); // the client goes away mid-answer
            await sending.ContinueWith(_ => { }, TaskScheduler.Default);
        }).ToList();
        await Task.WhenAll(clients);

        // A request whose whole answer the server had written before its client left (a stream of 400 small chunks fits
        // the socket buffers; on a loaded 2-core machine the first requests can finish while the last ones start) ended
        // as a success: every one of the twelve is counted once, as aborted or as succeeded, and at least one as aborted.
        var engine = server.State.Engine.Engine;
        using var admin = server.Http();
        string metrics = "";
        double Aborted() => Metric(metrics, "loraengine_request_aborted_total") - abortedBefore;
        double Succeeded() => Metric(metrics, "loraengine_request_success_total") - succeededBefore;
        for (int i = 0; i < 2400; i++)
        {
            bool idle = !engine.HasUnfinishedRequests; // every abort applied (each reports the gauges as it goes)
            metrics = await admin.GetStringAsync("/metrics", Ct);
            if (idle && Aborted() + Succeeded() == 12) break;
            await Task.Delay(50, Ct);
        }
        Assert.Equal(12, Aborted() + Succeeded());
        Assert.True(Aborted() > 0, $"no disconnect was counted as aborted ({Succeeded()} of 12 finished before their client left)");
        Assert.Equal(0, Metric(metrics, "loraengine_num_requests_running"));
        Assert.Equal(0, Metric(metrics, "loraengine_kv_cache_usage_perc"));
        Assert.Equal(0, Metric(metrics, "loraengine_kv_blocks_used"));
        Assert.Equal(0, Metric(metrics, "loraengine_lora_adapters_active"));
        Assert.Equal(0, Metric(metrics, "loraengine_request_failure_total"));
        Assert.Equal(0, server.State.Engine.NumOpenStreams);
    }

    [Fact]
    public async Task A_repeated_prompt_shows_as_prefix_cache_hits()
    {
        using var http = server.Http();
        const string prompt = "When you want to search for a pattern in the whole file, type a slash and the pattern, then press Enter.";
        double Hits(string text) => Metric(text, "loraengine_prefix_cache_hits_total");
        double Queries(string text) => Metric(text, "loraengine_prefix_cache_queries_total");
        string before = await http.GetStringAsync("/metrics", Ct);
        for (int i = 0; i < 2; i++)
        {
            var reply = await http.PostAsJsonAsync("/v1/completions", new { model = "vim-rot13", prompt, max_tokens = 2 }, Ct);
            reply.EnsureSuccessStatusCode();
        }
        string after = await http.GetStringAsync("/metrics", Ct);
        Assert.True(Hits(after) - Hits(before) >= 16, $"hits {Hits(before)} -> {Hits(after)}"); // the second request found at least a block
        Assert.True(Queries(after) - Queries(before) >= 2 * 17, $"queries {Queries(before)} -> {Queries(after)}");
        Assert.Contains("# TYPE loraengine_prefix_cache_hits_total counter", after);
    }

    [Fact]
    public async Task A_cache_salt_shares_a_prompts_blocks_only_with_requests_of_the_same_salt()
    {
        var api = new ApiCalls(server);
        const string prompt = "To move the cursor to the end of the line, type a dollar sign; to move it to the start, type a zero.";
        using var http = server.Http();
        async Task<double> Hits(string? salt, string model)
        {
            double before = Metric(await http.GetStringAsync("/metrics", Ct), "loraengine_prefix_cache_hits_total");
            var reply = await api.Post("/v1/completions", salt is null ? new { model, prompt, max_tokens = 2 } : new { model, prompt, max_tokens = 2, cache_salt = salt });
            Assert.Equal(System.Net.HttpStatusCode.OK, reply.Status);
            return Metric(await http.GetStringAsync("/metrics", Ct), "loraengine_prefix_cache_hits_total") - before;
        }
        Assert.Equal(0, await Hits("tenant-a", "vim-upper"));
        Assert.Equal(0, await Hits("tenant-b", "vim-upper"));
        Assert.Equal(0, await Hits(null, "vim-upper"));
        Assert.True(await Hits("tenant-a", "vim-upper") >= 16);

        var empty = await api.Post("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "hi" } }, cache_salt = "" });
        Assert.Equal(System.Net.HttpStatusCode.BadRequest, empty.Status);
        Assert.Equal("cache_salt", empty.Param);
    }
}
