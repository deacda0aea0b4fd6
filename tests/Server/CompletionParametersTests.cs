using System.Net;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>Each completions parameter checked by its effect on the shipped model's greedy output, not by a 200.</summary>
public class CompletionParametersTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    const string Prompt = "To delete a line, type";
    const int Eos = 1;
    readonly ApiCalls _api = new(server);

    Task<ApiCalls.Reply> Complete(object extra) => _api.Post("/v1/completions", Merge(new { prompt = Prompt, max_tokens = 8, temperature = 0, return_token_ids = true }, extra));

    /// <summary>The fields of <paramref name="extra"/> over those of <paramref name="baseBody"/>.</summary>
    internal static Dictionary<string, object?> Merge(object baseBody, object extra)
    {
        var d = JsonSerializer.Deserialize<Dictionary<string, object?>>(JsonSerializer.Serialize(baseBody))!;
        foreach (var (k, v) in JsonSerializer.Deserialize<Dictionary<string, object?>>(JsonSerializer.Serialize(extra))!) d[k] = v;
        return d;
    }

    // The fixture model's context is 512 tokens: a max_tokens that cannot fit was cut to what fits, finishing "length".
    [Fact]
    public async Task A_max_tokens_past_the_context_is_a_400_not_cut_short()
    {
        var tooLong = await _api.Post("/v1/completions", new { prompt = new int[100].Select(_ => 58).ToArray(), max_tokens = 413 });
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.Status);
        Assert.Equal("max_tokens", tooLong.Param);
        Assert.Contains("maximum context length is 512 tokens and your request has 100 input tokens (413 > 512 - 100)", tooLong.Error.GetProperty("message").GetString());
        var fits = await _api.Post("/v1/completions", new { prompt = new int[100].Select(_ => 58).ToArray(), max_tokens = 412, ignore_eos = true, temperature = 0 });
        Assert.Equal(412, fits.Usage("completion_tokens"));
        var chat = await _api.Post("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "hi" } }, max_completion_tokens = 600 });
        Assert.Equal(HttpStatusCode.BadRequest, chat.Status);
        Assert.Equal("max_completion_tokens", chat.Param);
    }

    [Fact]
    public async Task Echo_puts_the_prompt_first_with_its_logprobs_and_max_tokens_0_returns_the_prompt_alone()
    {
        var plain = await Complete(new { });
        var echoed = await Complete(new { echo = true, logprobs = 1 });
        Assert.Equal(Prompt + plain.Text(), echoed.Text());
        var logprobs = echoed.Choice().GetProperty("logprobs");
        int promptTokens = echoed.Usage("prompt_tokens");
        Assert.Equal(promptTokens + 8, logprobs.GetProperty("tokens").GetArrayLength());
        Assert.Equal(JsonValueKind.Null, logprobs.GetProperty("token_logprobs")[0].ValueKind);
        Assert.Equal(JsonValueKind.Number, logprobs.GetProperty("token_logprobs")[1].ValueKind);
        Assert.Equal(promptTokens, echoed.Choice().GetProperty("prompt_logprobs").GetArrayLength());

        var promptOnly = await Complete(new { echo = true, max_tokens = 0 });
        Assert.Equal(HttpStatusCode.OK, promptOnly.Status);
        Assert.Equal(Prompt, promptOnly.Text());
        Assert.Equal("max_tokens", (await Complete(new { max_tokens = 0 })).Param);
    }

    [Fact]
    public async Task Logit_bias_forces_a_token_clamps_to_100_and_names_bad_ids()
    {
        Assert.All((await Complete(new { logit_bias = new Dictionary<string, double> { ["77"] = 100 } })).TokenIds(), t => Assert.Equal(77, t));
        Assert.All((await Complete(new { logit_bias = new Dictionary<string, double> { ["77"] = 5000 } })).TokenIds(), t => Assert.Equal(77, t));
        var free = (await Complete(new { })).TokenIds();
        var banned = (await Complete(new { logit_bias = free.Distinct().ToDictionary(t => t.ToString(), _ => -100.0) })).TokenIds();
        Assert.Empty(banned.Intersect(free));
        Assert.Equal("logit_bias", (await Complete(new { logit_bias = new Dictionary<string, double> { ["1024"] = 1 } })).Param);
        Assert.Equal("logit_bias", (await Complete(new { logit_bias = new Dictionary<string, double> { ["x"] = 1 } })).Param);
    }

    [Fact]
    public async Task Min_tokens_and_ignore_eos_hold_off_an_eos_the_model_is_pushed_to()
    {
        var eager = new { logit_bias = new Dictionary<string, double> { [$"{Eos}"] = 100 } };
        var stopped = await Complete(eager);
        Assert.Equal([Eos], stopped.TokenIds());
        Assert.Equal("stop", stopped.Choice().GetProperty("finish_reason").GetString());

        var held = await Complete(Merge(eager, new { min_tokens = 5 }));
        Assert.Equal(6, held.Usage("completion_tokens"));
        Assert.Equal(Eos, held.TokenIds()[5]);

        var ignored = await Complete(Merge(eager, new { ignore_eos = true }));
        Assert.Equal(8, ignored.Usage("completion_tokens"));
        Assert.Equal("length", ignored.Choice().GetProperty("finish_reason").GetString());
    }

    [Fact]
    public async Task Skip_special_tokens_false_keeps_special_token_text()
    {
        var forcedEos = new { logit_bias = new Dictionary<string, double> { [$"{Eos}"] = 100 }, ignore_eos = true, max_tokens = 3 };
        Assert.Equal("", (await Complete(forcedEos)).Text());
        Assert.Equal("<|end_of_text|><|end_of_text|><|end_of_text|>", (await Complete(Merge(forcedEos, new { skip_special_tokens = false }))).Text());
    }

    [Fact]
    public async Task Stop_token_ids_and_stop_strings_name_their_stop_reason_and_include_stop_str_in_output_keeps_it()
    {
        var free = await Complete(new { ignore_eos = true });
        int stopToken = free.TokenIds()[3];
        var stopped = await Complete(new { stop_token_ids = new[] { stopToken }, ignore_eos = true });
        Assert.Equal("stop", stopped.Choice().GetProperty("finish_reason").GetString());
        Assert.Equal(stopToken, stopped.Choice().GetProperty("stop_reason").GetInt32());
        Assert.Equal(free.TokenIds().ToList().IndexOf(stopToken) + 1, stopped.Usage("completion_tokens"));

        string text = free.Text();
        string stop = text.Substring(5, 3);
        var cut = await Complete(new { stop, ignore_eos = true });
        Assert.Equal(text[..text.IndexOf(stop, StringComparison.Ordinal)], cut.Text());
        Assert.Equal(stop, cut.Choice().GetProperty("stop_reason").GetString());
        var kept = await Complete(new { stop, include_stop_str_in_output = true, ignore_eos = true });
        Assert.Equal(cut.Text() + stop, kept.Text());
    }

    [Fact]
    public async Task Prompts_as_strings_token_ids_and_lists_give_one_choice_per_prompt_and_n()
    {
        const string other = "The cursor moves";
        var a = await Complete(new { });
        var b = await Complete(new { prompt = other });
        var ids = (await _api.Post("/tokenize", new { prompt = Prompt })).Body.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        var otherIds = (await _api.Post("/tokenize", new { prompt = other })).Body.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();

        Assert.Equal(a.Text(), (await Complete(new { prompt = ids })).Text());
        var batch = await Complete(new { prompt = new[] { Prompt, other }, n = 2 });
        Assert.True(batch.Status == HttpStatusCode.OK, $"{batch.Status} {batch.Body}");
        Assert.Equal([0, 1, 2, 3], batch.Body.GetProperty("choices").EnumerateArray().Select(c => c.GetProperty("index").GetInt32()));
        Assert.Equal([a.Text(), a.Text(), b.Text(), b.Text()], Enumerable.Range(0, 4).Select(i => batch.Text(i)));
        Assert.Equal(ids.Length + otherIds.Length, batch.Usage("prompt_tokens")); // each prompt counted once, whatever n
        var tokenLists = await Complete(new { prompt = new[] { ids, otherIds } });
        Assert.Equal([a.Text(), b.Text()], Enumerable.Range(0, 2).Select(i => tokenLists.Text(i)));

        var chunks = await _api.Stream("/v1/completions", new { prompt = new[] { Prompt, other }, n = 2, max_tokens = 8, temperature = 0, stream = true });
        var streamed = new string[4];
        var finishes = new int[4];
        foreach (var choice in chunks.Select(c => c.GetProperty("choices")[0]))
        {
            int i = choice.GetProperty("index").GetInt32();
            streamed[i] += choice.GetProperty("text").GetString();
            if (choice.GetProperty("finish_reason").ValueKind == JsonValueKind.String) finishes[i]++;
        }
        Assert.Equal([a.Text(), a.Text(), b.Text(), b.Text()], streamed);
        Assert.Equal([1, 1, 1, 1], finishes);

        // A prompt refused after others were queued takes them back out.
        var tooLong = await Complete(new { prompt = new[] { ids, Enumerable.Repeat(5, 600).ToArray() }, max_tokens = 400, ignore_eos = true });
        Assert.Equal(HttpStatusCode.BadRequest, tooLong.Status);
        // The engine loop applies the abort before its next step (it is queued behind the add): wait for the loop.
        for (int i = 0; i < 600 && server.State.Engine.Engine.HasUnfinishedRequests; i++) await Task.Delay(50, TestContext.Current.CancellationToken);
        Assert.False(server.State.Engine.Engine.HasUnfinishedRequests);
        Assert.Equal(0, server.State.Engine.Engine.NumUsedKvBlocks);
        Assert.Equal("prompt", (await Complete(new { prompt = new object[] { "x", 5 } })).Param);
        Assert.Equal("prompt", (await Complete(new { prompt = new[] { 5, 4096 } })).Param);
        Assert.Equal("prompt", (await Complete(new { prompt = "" })).Param);
    }

    [Fact]
    public async Task Logprobs_stream_in_every_chunk_and_match_the_whole_response()
    {
        var whole = (await Complete(new { logprobs = 2 })).Choice().GetProperty("logprobs");
        var chunks = await _api.Stream("/v1/completions", new { prompt = Prompt, max_tokens = 8, temperature = 0, logprobs = 2, stream = true });
        var tokens = new List<string>();
        var values = new List<float>();
        foreach (var lp in chunks.Select(c => c.GetProperty("choices")[0].GetProperty("logprobs")))
        {
            tokens.AddRange(lp.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!));
            values.AddRange(lp.GetProperty("token_logprobs").EnumerateArray().Select(v => v.GetSingle()));
            Assert.All(lp.GetProperty("top_logprobs").EnumerateArray(), top => Assert.InRange(top.EnumerateObject().Count(), 1, 3));
        }
        Assert.Equal(whole.GetProperty("tokens").EnumerateArray().Select(t => t.GetString()!), tokens);
        Assert.Equal(whole.GetProperty("token_logprobs").EnumerateArray().Select(v => v.GetSingle()), values);
        Assert.Equal(whole.GetProperty("text_offset").EnumerateArray().Select(v => v.GetInt32()),
            chunks.SelectMany(c => c.GetProperty("choices")[0].GetProperty("logprobs").GetProperty("text_offset").EnumerateArray().Select(v => v.GetInt32())));
    }

    [Fact]
    public async Task Prompt_logprobs_come_per_choice_in_vllm_shape_and_not_with_stream()
    {
        var reply = await Complete(new { prompt_logprobs = 1, n = 2, temperature = 1, seed = 3 });
        int promptTokens = reply.Usage("prompt_tokens");
        var ids = (await _api.Post("/tokenize", new { prompt = Prompt })).Body.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();
        foreach (var choice in reply.Body.GetProperty("choices").EnumerateArray())
        {
            var lp = choice.GetProperty("prompt_logprobs");
            Assert.Equal(promptTokens, lp.GetArrayLength());
            Assert.Equal(JsonValueKind.Null, lp[0].ValueKind);
            var entry = lp[1].GetProperty(ids[1].ToString());
            Assert.True(entry.GetProperty("logprob").GetSingle() <= 0);
            Assert.True(entry.GetProperty("rank").GetInt32() >= 1);
            Assert.Equal(JsonValueKind.String, entry.GetProperty("decoded_token").ValueKind);
        }
        Assert.Equal("prompt_logprobs", (await Complete(new { prompt_logprobs = 1, stream = true })).Param);
    }

    [Fact]
    public async Task Stream_usage_comes_last_and_continuous_usage_counts_up()
    {
        var body = new { prompt = Prompt, max_tokens = 6, temperature = 0, ignore_eos = true, stream = true };
        var plain = await _api.Stream("/v1/completions", body);
        Assert.All(plain, c => Assert.False(c.TryGetProperty("usage", out _)));
        var withUsage = await _api.Stream("/v1/completions", Merge(body, new { stream_options = new { include_usage = true } }));
        Assert.Empty(withUsage[^1].GetProperty("choices").EnumerateArray());
        Assert.Equal(6, withUsage[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        var continuous = await _api.Stream("/v1/completions", Merge(body, new { stream_options = new { include_usage = true, continuous_usage_stats = true } }));
        var counts = continuous.Select(c => c.GetProperty("usage").GetProperty("completion_tokens").GetInt32()).ToList();
        Assert.Equal(counts.Order(), counts);
        Assert.True(counts.Count > 2);
        Assert.Equal("stream_options", (await Complete(new { stream_options = new { include_usage = true } })).Param);
        Assert.Equal("stream_options.bogus", (await Complete(new { stream = true, stream_options = new { bogus = true } })).Param);
    }

    [Fact]
    public async Task Truncation_special_tokens_and_token_ids_as_text_change_what_is_sent_and_returned()
    {
        var full = await Complete(new { });
        Assert.Equal(3, (await Complete(new { truncate_prompt_tokens = 3 })).Usage("prompt_tokens"));
        Assert.Equal(full.Usage("prompt_tokens") - 1, (await Complete(new { add_special_tokens = false })).Usage("prompt_tokens"));
        var asIds = await Complete(new { logprobs = 0, return_tokens_as_token_ids = true });
        Assert.Equal(full.TokenIds().Select(t => $"token_id:{t}"),
            asIds.Choice().GetProperty("logprobs").GetProperty("tokens").EnumerateArray().Select(t => t.GetString()));
        Assert.Equal("truncate_prompt_tokens", (await Complete(new { truncate_prompt_tokens = 100_000 })).Param);
    }
}
