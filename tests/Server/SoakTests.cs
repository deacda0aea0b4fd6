using System.Collections.Concurrent;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>
/// A soak against a real server: a few hundred requests over the base model and seven adapters, a fifth of them
/// abandoned by their clients, while adapters are loaded, unloaded and reloaded in place and one is deleted from disk.
/// Only requests for the deleted adapter may fail (with a 404 naming it); afterwards nothing is left in use and
/// memory is where it was after the warm-up. Runs alone so the heap it measures is its own.
/// </summary>
[Collection(nameof(SoakTests))]
[CollectionDefinition(nameof(SoakTests), DisableParallelization = true)]
public class SoakTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    const int Requests = 300, Clients = 12;
    static readonly string[] Stable = ["vim-tiny-bf16", "vim-upper", "vim-rot13", "vim-random-qv-r4", "s0", "s1", "s2", "s3"];
    static readonly string[] Fixtures = ["vim-upper", "vim-rot13", "vim-random-qv-r4"];

    static CancellationToken Ct => TestContext.Current.CancellationToken;

    enum Outcome { Ok, Abandoned, DoomedGone, Failed }

    async Task<HttpStatusCode> Admin(string route, object body)
    {
        using var http = server.Http();
        var r = await http.PostAsJsonAsync(route, body, Ct);
        return r.StatusCode;
    }

    /// <summary>Loads a copy of a fixture as <paramref name="name"/>, from the folder <paramref name="folder"/> (default: the name).</summary>
    Task<HttpStatusCode> Load(string name, string fixture, bool inplace = false, string? folder = null) =>
        Admin("/v1/load_lora_adapter", new { lora_name = name, lora_path = TestAdapters.Copy(fixture, Path.Combine(server.LoraRoot, folder ?? name)), load_inplace = inplace });

    async Task<(Outcome Outcome, string Detail)> Client(Random rnd, string model, bool stream, bool abandon)
    {
        using var http = server.Http();
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(Ct);
        if (abandon) cts.CancelAfter(rnd.Next(5, 150));
        var body = new { model, prompt = rnd.Next(2) == 0 ? "Vim is" : "To delete a line, type", max_tokens = rnd.Next(4, 24), ignore_eos = true, temperature = 0.7, seed = rnd.Next(), stream };
        try
        {
            var result = await Sse.Post(http, "/v1/completions", body, cts.Token);
            if (stream && result.Done && result.Error is null) return (Outcome.Ok, "");
            if (!stream && result.Status == HttpStatusCode.OK) return (Outcome.Ok, "");
            if (model == "doomed" && result.Status == HttpStatusCode.NotFound && result.Body.Contains("No adapter found")) return (Outcome.DoomedGone, "");
            return (Outcome.Failed, $"{model}: {result.Status} {result.Body} {string.Join(" | ", result.Events.TakeLast(2))}");
        }
        catch (OperationCanceledException) when (abandon)
        {
            return (Outcome.Abandoned, "");
        }
        catch (HttpRequestException e) when (abandon)
        {
            return (Outcome.Abandoned, e.Message);
        }
    }

    [Fact]
    public async Task Hundreds_of_requests_with_disconnects_and_adapter_churn_leave_nothing_behind()
    {
        for (int i = 0; i < 4; i++) Assert.Equal(HttpStatusCode.OK, await Load($"s{i}", Fixtures[i % 3]));
        Assert.Equal(HttpStatusCode.OK, await Load("doomed", "vim-upper"));
        var outcomes = new ConcurrentBag<(Outcome Outcome, string Detail)>();
        int issued = 0;
        long warmHeap = 0;
        var warm = new TaskCompletionSource();

        async Task RunClient(int seed)
        {
            var rnd = new Random(seed);
            while (Interlocked.Increment(ref issued) <= Requests)
            {
                string model = rnd.Next(10) == 0 ? "doomed" : Stable[rnd.Next(Stable.Length)];
                outcomes.Add(await Client(rnd, model, stream: rnd.Next(3) != 0, abandon: rnd.Next(5) == 0));
                if (outcomes.Count == 60) warm.TrySetResult();
            }
        }

        async Task Churn()
        {
            var rnd = new Random(7);
            await warm.Task.WaitAsync(Ct);
            warmHeap = Heap();
            for (int round = 0; Volatile.Read(ref issued) < Requests; round++)
            {
                switch (round % 4)
                {
                    case 0: Assert.Equal(HttpStatusCode.OK, await Load($"churn{round}", Fixtures[rnd.Next(3)])); break;
                    case 1: Assert.Equal(HttpStatusCode.OK, await Admin("/v1/unload_lora_adapter", new { lora_name = $"churn{round - 1}" })); break;
                    // A new version goes to a folder of its own, as a deployment publishes one: the files of the
                    // version in use are never rewritten under a request that is reading them (an adapter evicted
                    // from the CPU cache is read again from its folder).
                    default:
                        int slot = rnd.Next(4);
                        Assert.Equal(HttpStatusCode.OK, await Load($"s{slot}", Fixtures[rnd.Next(3)], inplace: true, folder: $"s{slot}-v{round}"));
                        break;
                }
                if (round == 6)
                {
                    // "doomed" leaves the CPU cache (six places) and its files vanish: requests holding it finish,
                    // later ones get a 404 naming it. Its folder leaves the root by one rename before it is deleted: a
                    // delete goes file by file, and a folder caught half-deleted (config there, weights gone) is a
                    // malformed adapter, a 400, not a missing one.
                    for (int i = 0; i < 6; i++) Assert.Equal(HttpStatusCode.OK, await Load($"evict{i}", Fixtures[i % 3]));
                    string gone = Path.Combine(Path.GetDirectoryName(server.LoraRoot)!, $"loraengine-doomed-{Guid.NewGuid():N}"); // same file system: an atomic rename
                    Directory.Move(Path.Combine(server.LoraRoot, "doomed"), gone);
                    Directory.Delete(gone, recursive: true);
                }
                await Task.Delay(rnd.Next(20, 120), Ct);
            }
        }

        await Task.WhenAll([.. Enumerable.Range(0, Clients).Select(RunClient), Churn()]);

        var failed = outcomes.Where(o => o.Outcome == Outcome.Failed).Select(o => o.Detail).ToList();
        Assert.True(failed.Count == 0, $"{failed.Count} requests failed:\n{string.Join("\n", failed.Take(5))}");
        Assert.Equal(Requests, outcomes.Count);
        Assert.True(outcomes.Count(o => o.Outcome == Outcome.Ok) > Requests / 2);
        Assert.Contains(outcomes, o => o.Outcome == Outcome.Abandoned);
        Assert.Contains(outcomes, o => o.Outcome == Outcome.DoomedGone);
        TestContext.Current.TestOutputHelper?.WriteLine(string.Join(", ", outcomes.GroupBy(o => o.Outcome).Select(g => $"{g.Key} {g.Count()}")));

        var engine = server.State.Engine;
        for (int i = 0; i < 1200 && (engine.Engine.HasUnfinishedRequests || engine.NumOpenStreams > 0); i++) await Task.Delay(50, Ct);
        Assert.Equal(0, engine.Engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.Engine.NumLoraPins);
        Assert.Equal(0, engine.NumOpenStreams);
        Assert.False(engine.Errored);
        Assert.True(engine.Engine.ListLoras().Count <= engine.Engine.Config.MaxCpuLoras);
        Assert.Equal(0, Interlocked.Read(ref server.State.RequestsFailed));
        using var http = server.Http();
        string metrics = await http.GetStringAsync("/metrics", Ct);
        Assert.Contains("loraengine_num_requests_running{model_name=\"vim-tiny-bf16\"} 0\n", metrics);
        Assert.Contains("loraengine_kv_cache_usage_perc{model_name=\"vim-tiny-bf16\"} 0\n", metrics);
        long growth = Heap() - warmHeap;
        TestContext.Current.TestOutputHelper?.WriteLine($"heap after warm-up {warmHeap >> 20} MiB, growth {growth / 1048576.0:F1} MiB");
        Assert.True(growth < 64L << 20, $"the managed heap grew by {growth >> 20} MiB after the warm-up");
    }

    static long Heap()
    {
        GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
        GC.WaitForPendingFinalizers();
        return GC.GetTotalMemory(forceFullCollection: true);
    }
}
