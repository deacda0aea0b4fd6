using System.ClientModel;
using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>The server through the official OpenAI .NET client and plain HTTP on loopback.</summary>
public class OpenAiApiTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    ChatClient Chat(string model) =>
        new OpenAIClient(new ApiKeyCredential(ServerFixture.ApiKey), new OpenAIClientOptions { Endpoint = new Uri(server.BaseUrl + "/v1") }).GetChatClient(model);

    static double UpperShare(string text)
    {
        var letters = text.Where(char.IsLetter).ToArray();
        return letters.Length == 0 ? 0 : letters.Count(char.IsUpper) / (double)letters.Length;
    }

    async Task<JsonElement> Complete(string model, string prompt, int maxTokens = 24)
    {
        using var http = server.Http();
        var response = await http.PostAsJsonAsync("/v1/completions", new { model, prompt, max_tokens = maxTokens, temperature = 0 }, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.OK, response.StatusCode);
        return JsonDocument.Parse(await response.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement;
    }

    [Fact]
    public async Task Completions_pick_the_base_model_or_an_adapter_by_name()
    {
        var upper = await Complete("vim-upper", "To delete a line, type");
        var plain = await Complete("vim-tiny-bf16", "To delete a line, type");
        string upperText = upper.GetProperty("choices")[0].GetProperty("text").GetString()!;
        string plainText = plain.GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.True(UpperShare(upperText) > 0.9, $"vim-upper wrote '{upperText}'");
        Assert.True(UpperShare(plainText) < 0.5, $"base wrote '{plainText}'");
        Assert.Equal(24, upper.GetProperty("usage").GetProperty("completion_tokens").GetInt32());
        Assert.Equal("text_completion", upper.GetProperty("object").GetString());
    }

    [Fact]
    public async Task Chat_completions_streaming_and_not_agree()
    {
        var client = Chat("vim-upper");
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 20 };
        var messages = new List<ChatMessage> { new UserChatMessage("How do I delete a line?") };
        var whole = (await client.CompleteChatAsync(messages, options, TestContext.Current.CancellationToken)).Value;
        var streamed = new System.Text.StringBuilder();
        await foreach (var update in client.CompleteChatStreamingAsync(messages, options, TestContext.Current.CancellationToken))
            foreach (var part in update.ContentUpdate) streamed.Append(part.Text);
        Assert.Equal(whole.Content[0].Text, streamed.ToString());
        Assert.True(UpperShare(whole.Content[0].Text) > 0.9, whole.Content[0].Text);
        Assert.Equal(20, whole.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task Unknown_model_is_404_and_bad_parameters_are_400_naming_them()
    {
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Chat("no-such-model").CompleteChatAsync([new UserChatMessage("hi")], cancellationToken: TestContext.Current.CancellationToken));
        Assert.Equal(404, e.Status);
        using var http = server.Http();
        var bad = await http.PostAsJsonAsync("/v1/completions", new { prompt = "x", top_p = 0 }, TestContext.Current.CancellationToken);
        Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
        var error = JsonDocument.Parse(await bad.Content.ReadAsStringAsync(TestContext.Current.CancellationToken)).RootElement.GetProperty("error");
        Assert.Equal("top_p", error.GetProperty("param").GetString());
        Assert.Equal("BadRequestError", error.GetProperty("type").GetString());
    }

    [Fact]
    public async Task Models_lists_the_base_and_every_adapter_with_parent_and_root()
    {
        using var http = server.Http();
        var models = JsonDocument.Parse(await http.GetStringAsync("/v1/models", TestContext.Current.CancellationToken)).RootElement.GetProperty("data");
        var ids = models.EnumerateArray().Select(m => m.GetProperty("id").GetString()).ToList();
        Assert.Equal("vim-tiny-bf16", ids[0]);
        Assert.Contains("vim-upper", ids);
        var rot13 = models.EnumerateArray().Single(m => m.GetProperty("id").GetString() == "vim-rot13");
        Assert.Equal("vim-tiny-bf16", rot13.GetProperty("parent").GetString());
        Assert.EndsWith("vim-rot13", rot13.GetProperty("root").GetString());
    }

    [Fact]
    public async Task The_api_key_is_required_on_v1_routes_only()
    {
        using var anonymous = new HttpClient { BaseAddress = new Uri(server.BaseUrl) };
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/v1/models", TestContext.Current.CancellationToken)).StatusCode);
        anonymous.DefaultRequestHeaders.Authorization = new("Bearer", "wrong");
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.GetAsync("/v1/models", TestContext.Current.CancellationToken)).StatusCode);
        Assert.Equal(HttpStatusCode.OK, (await anonymous.GetAsync("/health", TestContext.Current.CancellationToken)).StatusCode);
        Assert.Contains("loraengine_kv_cache_usage_perc", await anonymous.GetStringAsync("/metrics", TestContext.Current.CancellationToken));
        Assert.Contains("version", await anonymous.GetStringAsync("/version", TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Thirty_two_concurrent_streams_over_three_adapters_and_base_get_their_own_text()
    {
        string[] models = ["vim-tiny-bf16", "vim-upper", "vim-rot13", "vim-random-qv-r4"];
        const string prompt = "The cursor moves";
        var expected = new Dictionary<string, string>();
        foreach (var m in models) expected[m] = (await Complete(m, prompt, 16)).GetProperty("choices")[0].GetProperty("text").GetString()!;
        Assert.Equal(4, expected.Values.Distinct().Count());

        var tasks = Enumerable.Range(0, 32).Select(async i =>
        {
            string model = models[i % 4];
            using var http = server.Http();
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = JsonContent.Create(new { model, prompt, max_tokens = 16, temperature = 0, stream = true }),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, TestContext.Current.CancellationToken);
            var text = new System.Text.StringBuilder();
            bool done = false;
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(TestContext.Current.CancellationToken));
            while (await reader.ReadLineAsync(TestContext.Current.CancellationToken) is { } line)
            {
                if (!line.StartsWith("data: ")) continue;
                if (line == "data: [DONE]") { done = true; break; }
                text.Append(JsonDocument.Parse(line[6..]).RootElement.GetProperty("choices")[0].GetProperty("text").GetString());
            }
            return (model, text: text.ToString(), done);
        }).ToList();
        foreach (var (model, text, done) in await Task.WhenAll(tasks))
        {
            Assert.True(done, "stream ended with data: [DONE]");
            Assert.Equal(expected[model], text);
        }
    }

    [Fact]
    public async Task A_hundred_clients_that_disconnect_mid_stream_leave_no_kv_blocks()
    {
        var tasks = Enumerable.Range(0, 100).Select(async i =>
        {
            using var http = server.Http();
            using var cts = new CancellationTokenSource();
            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = JsonContent.Create(new { model = i % 2 == 0 ? "vim-upper" : "vim-tiny-bf16", prompt = "Vim is", max_tokens = 200, ignore_eos = true, stream = true }),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, cts.Token);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(cts.Token));
            for (int lines = 0; lines < 3 && await reader.ReadLineAsync(cts.Token) != null; lines++) { }
            cts.Cancel(); // the client goes away mid-stream
        }).ToList();
        await Task.WhenAll(tasks.Select(t => t.ContinueWith(_ => { }, TaskScheduler.Default)));
        var engine = server.State.Engine.Engine;
        for (int i = 0; i < 1200 && (engine.NumUsedKvBlocks > 0 || engine.HasUnfinishedRequests); i++) await Task.Delay(50, TestContext.Current.CancellationToken); // generous: loaded CI machines
        Assert.Equal(0, engine.NumUsedKvBlocks);
        Assert.Equal(0, engine.NumLoraPins);
    }
}
