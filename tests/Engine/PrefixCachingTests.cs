using FsCheck.Xunit;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Engine.Tests;

/// <summary>An engine with prefix caching off, which runs each request alone: the reference for the cached engine.</summary>
public sealed class UncachedReference : IDisposable
{
    readonly Dictionary<string, RequestOutput> _memo = new();

    public LlmEngine Engine { get; } = LlmEngine.FromEngineArgs(PrefixCachingTests.Args(caching: false));

    /// <summary>The request's output alone in the uncached engine (memoised: FsCheck repeats prompts).</summary>
    public RequestOutput Alone(IReadOnlyList<int> prompt, SamplingParams sampling, string adapter)
    {
        string key = $"{string.Join(',', prompt)}|{sampling}|{adapter}";
        if (_memo.TryGetValue(key, out var known)) return known;
        Engine.AddRequest("alone", prompt, sampling, adapter == "base" ? null : EngineFactory.Lora(adapter));
        return _memo[key] = EngineFactory.RunToCompletion(Engine)["alone"];
    }

    public void Dispose() => Engine.Dispose();
}

/// <summary>
/// Prefix caching on the fixture model: whatever interleaves — shared prefixes, several adapters, an adapter reloaded
/// in place, aborts, preemption, n &gt; 1, prompt logprobs — every request gets the tokens and logprobs it gets alone
/// with the cache off, and no block stays held; an adapter reloaded in place never reads its old weights' blocks.
/// </summary>
public sealed class PrefixCachingTests(UncachedReference reference) : IClassFixture<UncachedReference>, IDisposable
{
    readonly string _dir = Directory.CreateTempSubdirectory("loraengine-prefix-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    public static EngineArgs Args(bool caching) => EngineFactory.Args() with { EnablePrefixCaching = caching, MaxModelLen = 128, MaxNumSeqs = 8 };

    /// <summary>Puts <paramref name="fixture"/>'s files in the folder of the in-place adapter "mine".</summary>
    string Mine(string fixture)
    {
        string dir = Path.Combine(_dir, "mine");
        Directory.CreateDirectory(dir);
        foreach (var f in Directory.GetFiles(Fixtures.Adapter(fixture))) File.Copy(f, Path.Combine(dir, Path.GetFileName(f)), overwrite: true);
        return dir;
    }

    static void Same(RequestOutput expected, RequestOutput actual)
    {
        Assert.Null(actual.Error);
        Assert.Equal(expected.Outputs.Count, actual.Outputs.Count);
        for (int i = 0; i < expected.Outputs.Count; i++)
        {
            var (e, a) = (expected.Outputs[i], actual.Outputs[i]);
            Assert.Equal(e.TokenIds, a.TokenIds);
            Assert.Equal(e.FinishReason, a.FinishReason);
            Assert.Equal(e.CumulativeLogprob, a.CumulativeLogprob);
            Assert.Equal(e.Logprobs is null, a.Logprobs is null);
            for (int t = 0; t < (e.Logprobs?.Count ?? 0); t++) Assert.Equal(e.Logprobs![t], a.Logprobs![t]);
        }
        Assert.Equal(expected.PromptLogprobs is null, actual.PromptLogprobs is null);
        for (int p = 0; p < (expected.PromptLogprobs?.Count ?? 0); p++) Assert.Equal(expected.PromptLogprobs![p], actual.PromptLogprobs![p]);
    }

    /// <summary>MaxModelLen of the random interleavings: room for their longest request (a 32-token prefix, 5 tokens of its own, 6 generated).</summary>
    const int Longest = 48;

    [Property(MaxTest = 10)]
    public void Random_interleavings_give_every_request_what_it_gets_alone_uncached_and_leak_no_block(int seed)
    {
        var rnd = new Random(seed);
        int blockSize = new[] { 4, 8, 16 }[rnd.Next(3)];
        using var engine = LlmEngine.FromEngineArgs(Args(caching: true) with
        {
            BlockSize = blockSize,
            MaxModelLen = Longest,
            MaxNumBatchedTokens = rnd.Next(8, 65),
            NumGpuBlocksOverride = (Longest + blockSize - 1) / blockSize * rnd.Next(1, 3) + rnd.Next(3), // small pools preempt
        });
        int vocab = engine.ModelConfig.VocabSize;
        var prefixes = Enumerable.Range(0, 3).Select(_ => Enumerable.Range(0, rnd.Next(0, 33)).Select(_ => rnd.Next(2, vocab)).ToArray()).ToArray();
        string mineHolds = "vim-upper";
        var mine = new LoraRequest("mine", 40, Mine(mineHolds));
        string[] adapters = ["base", .. EngineFactory.Adapters, "mine"];

        var added = new List<(string Id, int[] Prompt, SamplingParams Sampling, string Adapter, bool Mine)>();
        var outputs = new Dictionary<string, RequestOutput>();
        var skipped = new HashSet<string>(); // aborted, or running when their adapter was reloaded: no reference
        int toAdd = rnd.Next(3, 10);
        for (int step = 0; step < 2000 && (toAdd > 0 || engine.HasUnfinishedRequests); step++)
        {
            if (toAdd > 0 && rnd.Next(2) == 0)
            {
                var prefix = prefixes[rnd.Next(prefixes.Length)];
                int[] prompt = [.. prefix, .. Enumerable.Range(0, rnd.Next(prefix.Length == 0 ? 1 : 0, 6)).Select(_ => rnd.Next(2, vocab))];
                bool greedy = rnd.Next(2) == 0;
                var sampling = new SamplingParams
                {
                    MaxTokens = rnd.Next(1, 7), IgnoreEos = true, N = rnd.Next(4) == 0 ? rnd.Next(2, 4) : 1,
                    Temperature = greedy ? 0 : 0.9, Seed = greedy ? null : rnd.Next(1000), Logprobs = 2, PromptLogprobs = rnd.Next(6) == 0 ? 2 : null,
                };
                string adapter = adapters[rnd.Next(adapters.Length)];
                string id = $"r{added.Count}";
                engine.AddRequest(id, prompt, sampling, adapter switch { "base" => null, "mine" => mine, _ => EngineFactory.Lora(adapter) });
                added.Add((id, prompt, sampling, adapter == "mine" ? mineHolds : adapter, adapter == "mine"));
                toAdd--;
            }
            if (rnd.Next(15) == 0 && added.Where(r => !outputs.ContainsKey(r.Id) && !skipped.Contains(r.Id)).ToArray() is { Length: > 0 } live)
            {
                string victim = live[rnd.Next(live.Length)].Id;
                engine.AbortRequest(victim);
                skipped.Add(victim);
            }
            if (rnd.Next(12) == 0)
            {
                mineHolds = mineHolds == "vim-upper" ? "vim-rot13" : "vim-upper";
                Mine(mineHolds);
                engine.AddLora(mine with { LoadInplace = true });
                foreach (var r in added.Where(r => r.Mine && !outputs.ContainsKey(r.Id))) skipped.Add(r.Id);
            }
            foreach (var o in engine.Step())
                if (o.Finished) outputs[o.RequestId] = o;
        }

        Assert.False(engine.HasUnfinishedRequests);
        foreach (var (id, prompt, sampling, adapter, _) in added.Where(r => !skipped.Contains(r.Id)))
            Same(reference.Alone(prompt, sampling, adapter), outputs[id]);
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
    }

    [Fact]
    public void An_adapter_reloaded_in_place_never_reads_its_old_weights_blocks_and_equal_weights_share()
    {
        using var engine = LlmEngine.FromEngineArgs(Args(caching: true));
        var prompt = engine.Tokenizer.Encode("When you want to search for a pattern in the whole file, type a slash and the pattern, then press Enter. To repeat the search, type n; to search backwards, type N.").ToArray();
        var greedy = new SamplingParams { Temperature = 0, MaxTokens = 8, IgnoreEos = true, Logprobs = 2 };
        var mine = new LoraRequest("mine", 40, Mine("vim-upper"));
        long hits = 0;
        RequestOutput Run(string id, LoraRequest lora, bool expectHits)
        {
            engine.AddRequest(id, prompt, greedy, lora);
            var output = EngineFactory.RunToCompletion(engine)[id];
            Assert.Equal(expectHits, engine.Metrics.PrefixCacheHits > hits);
            hits = engine.Metrics.PrefixCacheHits;
            return output;
        }
        Assert.True(prompt.Length > 2 * engine.Config.Args.BlockSize, $"{prompt.Length} tokens");

        Same(reference.Alone(prompt, greedy, "vim-upper"), Run("before", mine, expectHits: false));
        Mine("vim-rot13");
        engine.AddLora(mine with { LoadInplace = true });
        Same(reference.Alone(prompt, greedy, "vim-rot13"), Run("after", mine, expectHits: false));            // new weights: a miss
        Same(reference.Alone(prompt, greedy, "vim-upper"), Run("other name", EngineFactory.Lora("vim-upper"), expectHits: true)); // the old weights by another name
        Same(reference.Alone(prompt, greedy, "vim-rot13"), Run("again", mine, expectHits: true));             // the new weights' blocks
        Assert.Equal(0, engine.NumUsedKvBlocks);
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void The_n_sequences_of_a_request_compute_their_prompt_once(bool caching)
    {
        using var engine = LlmEngine.FromEngineArgs(Args(caching));
        int[] prompt = Enumerable.Range(7, 40).ToArray(); // two full blocks of 16, then 8 tokens
        var sampling = new SamplingParams { Temperature = 0, MaxTokens = 3, IgnoreEos = true, N = 4 };
        engine.AddRequest("n4", prompt, sampling);
        var output = EngineFactory.RunToCompletion(engine)["n4"];
        Assert.Equal(40 + 3 * 8, engine.Metrics.PromptTokens); // the prompt once, then each other sequence its last 8 tokens
        var alone = reference.Alone(prompt, sampling with { N = 1 }, "base").Outputs[0].TokenIds;
        Assert.All(output.Outputs, o => Assert.Equal(alone, o.TokenIds)); // greedy: every sequence as one alone
        Assert.Equal(0, engine.NumUsedKvBlocks);
    }
}
