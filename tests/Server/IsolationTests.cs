using System.Net;
using System.Net.Http.Json;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>
/// Issue 11's cases against a real server: one adapter's fault never reaches another request, in-place reloads reach
/// running and later requests, the LoRA root holds at every read, and every failure is an OpenAI-style JSON error.
/// </summary>
public class IsolationTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    async Task<(HttpStatusCode Status, string Body)> Post(string route, object body)
    {
        using var http = server.Http();
        var r = await http.PostAsJsonAsync(route, body, Ct);
        return (r.StatusCode, await r.Content.ReadAsStringAsync(Ct));
    }

    Task<(HttpStatusCode Status, string Body)> Load(string name, string path, bool inplace = false) =>
        Post("/v1/load_lora_adapter", new { lora_name = name, lora_path = path, load_inplace = inplace });

    async Task<string> Greedy(string model, int maxTokens = 24)
    {
        var (status, body) = await Post("/v1/completions", new { model, prompt = "The cursor moves", max_tokens = maxTokens, temperature = 0, ignore_eos = true });
        Assert.True(status == HttpStatusCode.OK, body);
        return JsonDocument.Parse(body).RootElement.GetProperty("choices")[0].GetProperty("text").GetString()!;
    }

    /// <summary>Waits until the engine holds at least <paramref name="count"/> requests (each has its adapter copy then).</summary>
    async Task OpenStreams(int count)
    {
        for (int i = 0; i < 3000 && server.State.Engine.NumOpenStreams < count; i++) await Task.Delay(10, Ct);
        Assert.True(server.State.Engine.NumOpenStreams >= count, $"{count} requests in the engine");
    }

    static JsonElement ErrorOf(string body) => JsonDocument.Parse(body).RootElement.GetProperty("error");

    /// <summary>A JSON error naming its type, and for a 500, nothing of the server's insides.</summary>
    static JsonElement AssertJsonError(HttpStatusCode status, string body)
    {
        Assert.True((int)status >= 400, $"{status}: {body}");
        var error = ErrorOf(body);
        Assert.Equal((int)status, error.GetProperty("code").GetInt32());
        Assert.False(string.IsNullOrEmpty(error.GetProperty("message").GetString()));
        Assert.False(string.IsNullOrEmpty(error.GetProperty("type").GetString()));
        Assert.DoesNotContain("Exception", body);
        Assert.DoesNotContain("   at ", body);
        return error;
    }

    [Fact]
    public async Task An_adapter_evicted_and_deleted_while_its_stream_waits_fails_no_stream()
    {
        // Three runtime adapters fill the three slots, two base streams run beside them; "victim" waits for a slot.
        for (int i = 0; i < 3; i++) Assert.Equal(HttpStatusCode.OK, (await Load($"c1-a{i}", TestAdapters.Copy(i == 1 ? "vim-rot13" : "vim-upper", Path.Combine(server.LoraRoot, $"c1-a{i}")))).Status);
        Assert.Equal(HttpStatusCode.OK, (await Load("victim", TestAdapters.Copy("vim-upper", Path.Combine(server.LoraRoot, "victim")))).Status);
        using var http = server.Http();
        object Body(string model, int tokens) => new { model, prompt = "The cursor moves", max_tokens = tokens, temperature = 0, ignore_eos = true, stream = true };
        var streams = new List<Task<Sse.Result>>();
        for (int i = 0; i < 3; i++) streams.Add(Sse.Post(http, "/v1/completions", Body($"c1-a{i}", 300), Ct));
        for (int i = 0; i < 2; i++) streams.Add(Sse.Post(http, "/v1/completions", Body("vim-tiny-bf16", 300), Ct));
        var victim = Sse.Post(http, "/v1/completions", Body("victim", 24), Ct);
        await OpenStreams(6);

        // Six more adapters push "victim" out of the CPU cache (six places); then its files vanish.
        for (int i = 0; i < 6; i++) Assert.Equal(HttpStatusCode.OK, (await Load($"c1-b{i}", TestAdapters.Copy("vim-random-qv-r4", Path.Combine(server.LoraRoot, $"c1-b{i}")))).Status);
        Assert.DoesNotContain(server.State.Adapters.Find("victim")!.LoraIntId, server.State.Engine.Engine.ListLoras());
        Directory.Delete(Path.Combine(server.LoraRoot, "victim"), recursive: true);

        foreach (var s in await Task.WhenAll(streams))
        {
            Assert.True(s.Done, "every stream ends with [DONE]");
            Assert.Null(s.Error);
        }
        var v = await victim;
        Assert.True(v.Done && v.Error is null, string.Join("\n", v.Events.TakeLast(3)));
        Assert.Equal(await Greedy("vim-upper"), v.Text); // the copy it was admitted with

        // A new request for it reloads at once and fails alone, with a clear JSON error.
        var (status, body) = await Post("/v1/completions", new { model = "victim", prompt = "Vim is", max_tokens = 4 });
        Assert.Equal(HttpStatusCode.NotFound, status);
        Assert.Contains("No adapter found", AssertJsonError(status, body).GetProperty("message").GetString());
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/completions", new { model = "vim-rot13", prompt = "Vim is", max_tokens = 4 })).Status);
    }

    [Fact]
    public async Task Load_inplace_serves_the_new_weights_to_the_next_request()
    {
        string dir = TestAdapters.Copy("vim-upper", Path.Combine(server.LoraRoot, "c2"));
        Assert.Equal(HttpStatusCode.OK, (await Load("c2", "c2")).Status);
        Assert.Equal(await Greedy("vim-upper"), await Greedy("c2"));
        // A stream is running with it while the weights change on disk and are reloaded in place.
        using var http = server.Http();
        var running = Sse.Post(http, "/v1/completions", new { model = "c2", prompt = "The cursor moves", max_tokens = 200, temperature = 0, ignore_eos = true, stream = true }, Ct);
        await OpenStreams(1);
        TestAdapters.Copy("vim-rot13", dir);
        var (status, body) = await Load("c2", "c2", inplace: true);
        Assert.True(status == HttpStatusCode.OK, body);
        Assert.Equal(await Greedy("vim-rot13"), await Greedy("c2"));
        Assert.True((await running).Done);
    }

    [Fact]
    public async Task The_lora_root_holds_at_every_read_and_messages_quote_no_file()
    {
        string outside = Directory.CreateTempSubdirectory("loraengine-outside-").FullName;
        try
        {
            TestAdapters.Copy("vim-rot13", outside);
            File.WriteAllText(Path.Combine(outside, "secret.json"), "{\"password\": hunter2}");
            TestAdapters.Copy("vim-upper", Path.Combine(server.LoraRoot, "c3-real"));
            string link = Path.Combine(server.LoraRoot, "c3-link");
            Directory.CreateSymbolicLink(link, Path.Combine(server.LoraRoot, "c3-real"));
            Assert.Equal(HttpStatusCode.OK, (await Load("c3", "c3-link")).Status);
            Assert.Equal(await Greedy("vim-upper"), await Greedy("c3"));

            // Repoint the link outside the root and push the adapter out of the CPU cache: the reload must refuse.
            Directory.Delete(link);
            Directory.CreateSymbolicLink(link, outside);
            for (int i = 0; i < 6; i++) Assert.Equal(HttpStatusCode.OK, (await Load($"c3-b{i}", TestAdapters.Copy("vim-random-qv-r4", Path.Combine(server.LoraRoot, $"c3-b{i}")))).Status);
            var (status, body) = await Post("/v1/completions", new { model = "c3", prompt = "Vim is", max_tokens = 4 });
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.Contains("outside the LoRA root", AssertJsonError(status, body).GetProperty("message").GetString());

            // A config that is really another file: the parse error gives a position, never the bytes.
            string quoting = Path.Combine(server.LoraRoot, "c3-quote");
            TestAdapters.Copy("vim-upper", quoting);
            File.Copy(Path.Combine(outside, "secret.json"), Path.Combine(quoting, "adapter_config.json"), overwrite: true);
            (status, body) = await Load("c3-quote", "c3-quote");
            Assert.Equal(HttpStatusCode.BadRequest, status);
            Assert.DoesNotContain("hunter2", body);
            Assert.DoesNotContain("'h'", body);
            AssertJsonError(status, body);
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }

    [Fact]
    public async Task Hostile_bodies_and_adapters_get_json_errors_and_serving_goes_on()
    {
        using var http = server.Http();
        // Chat content shapes the routes do not expect: whatever their status, a JSON error.
        foreach (var messages in new object[]
        {
            new object[] { new { role = "user", content = new object[] { "hi" } } },
            new object[] { new { role = "user", content = new object[] { new { type = "text", text = 5 } } } },
            new object?[] { null },
        })
        {
            var (s, b) = await Post("/v1/chat/completions", new { model = "vim-upper", messages, max_tokens = 4 });
            AssertJsonError(s, b);
        }
        // Invalid UTF-8.
        var bytes = new ByteArrayContent([.. "{\"prompt\": \""u8, 0xff, 0xfe, .. "\", \"max_tokens\": 2}"u8]);
        bytes.Headers.ContentType = new("application/json");
        var response = await http.PostAsync("/v1/completions", bytes, Ct);
        string body = await response.Content.ReadAsStringAsync(Ct);
        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        Assert.Contains("not valid UTF-8", AssertJsonError(response.StatusCode, body).GetProperty("message").GetString());
        // A symbolic link loop as lora_path.
        Directory.CreateSymbolicLink(Path.Combine(server.LoraRoot, "c4-loop"), "c4-loop");
        var (status, text) = await Load("c4-loop", "c4-loop");
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("symbolic link loop", AssertJsonError(status, text).GetProperty("message").GetString());
        // NaN weights are refused at load.
        (status, text) = await Load("c4-nan", TestAdapters.Diverging(Path.Combine(server.LoraRoot, "c4-nan"), float.NaN));
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("holds a NaN", AssertJsonError(status, text).GetProperty("message").GetString());
        // Unknown routes and wrong methods.
        response = await http.GetAsync("/v1/no-such-route", Ct);
        Assert.Equal("NotFoundError", AssertJsonError(response.StatusCode, await response.Content.ReadAsStringAsync(Ct)).GetProperty("type").GetString());
        response = await http.GetAsync("/v1/completions", Ct);
        Assert.Equal(HttpStatusCode.MethodNotAllowed, response.StatusCode);
        AssertJsonError(response.StatusCode, await response.Content.ReadAsStringAsync(Ct));
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/completions", new { model = "vim-upper", prompt = "Vim is", max_tokens = 4 })).Status);
    }

    [Fact]
    public async Task An_adapter_that_diverges_fails_its_own_requests_only()
    {
        Assert.Equal(HttpStatusCode.OK, (await Load("c5-inf", TestAdapters.Diverging(Path.Combine(server.LoraRoot, "c5-inf")))).Status);
        long failedBefore = Interlocked.Read(ref server.State.RequestsFailed);
        using var http = server.Http();
        var neighbour = Sse.Post(http, "/v1/completions", new { model = "vim-upper", prompt = "The cursor moves", max_tokens = 24, temperature = 0, ignore_eos = true, stream = true }, Ct);

        var (status, body) = await Post("/v1/completions", new { model = "c5-inf", prompt = "Vim is", max_tokens = 8, logprobs = 2 });
        Assert.Equal(HttpStatusCode.InternalServerError, status);
        var error = AssertJsonError(status, body);
        Assert.Equal("InternalServerError", error.GetProperty("type").GetString());
        Assert.Contains("non-finite logits", error.GetProperty("message").GetString());

        var streamed = await Sse.Post(http, "/v1/chat/completions", new { model = "c5-inf", messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 8, logprobs = true, stream = true }, Ct);
        Assert.True(streamed.Done, "an error event, then [DONE]");
        Assert.Contains("non-finite logits", streamed.Error!.Value.GetProperty("message").GetString());

        var n = await neighbour;
        Assert.True(n.Done && n.Error is null);
        Assert.Equal(await Greedy("vim-upper"), n.Text);
        Assert.Equal(failedBefore + 2, Interlocked.Read(ref server.State.RequestsFailed));
        Assert.False(server.State.Engine.Errored);
    }

    [Fact]
    public async Task Oversized_work_is_refused_before_it_is_done()
    {
        var (status, body) = await Post("/v1/completions", new { prompt = "Vim is", n = 20000, max_tokens = 4 });
        Assert.Equal("n", AssertJsonError(status, body).GetProperty("param").GetString());
        (status, body) = await Post("/v1/completions", new { prompt = "Vim is", n = 64, max_tokens = 500 });
        Assert.Equal("max_tokens", AssertJsonError(status, body).GetProperty("param").GetString());
        // Within the body limit but past max_prompt_chars (32 × 512): refused without tokenising.
        (status, body) = await Post("/v1/completions", new { prompt = new string('a', 1 << 20), max_tokens = 4 });
        Assert.Equal("prompt", AssertJsonError(status, body).GetProperty("param").GetString());
        (status, body) = await Post("/v1/chat/completions", new { model = "vim-upper", messages = new[] { new { role = "user", content = new string('a', 1 << 20) } } });
        Assert.Equal("prompt", AssertJsonError(status, body).GetProperty("param").GetString());
    }

    /// <summary>
    /// Past the body limit (16 MiB): 413 before anything parses it. The client waits for the server's answer before it
    /// sends the body (Expect: 100-continue), as a client that sent it all would find the connection closed under it.
    /// </summary>
    [Fact]
    public async Task A_body_declared_past_the_limit_is_refused_from_its_headers()
    {
        // Never send the body while the answer is pending: past the handler's Expect100ContinueTimeout (1 s by default, a
        // loaded CI machine can take longer) it would send anyway and the race would be back.
        using var http = new HttpClient(new SocketsHttpHandler { Expect100ContinueTimeout = TimeSpan.FromMinutes(2) }) { BaseAddress = new Uri(server.BaseUrl) };
        http.DefaultRequestHeaders.Authorization = new("Bearer", ServerFixture.ApiKey);
        using var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions") { Content = new ByteArrayContent(new byte[17 << 20]) };
        request.Content.Headers.ContentType = new("application/json");
        request.Headers.ExpectContinue = true;
        using var r = await http.SendAsync(request, Ct);
        Assert.Equal(HttpStatusCode.RequestEntityTooLarge, r.StatusCode);
        AssertJsonError(r.StatusCode, await r.Content.ReadAsStringAsync(Ct));
    }

    /// <summary>
    /// A chunked body has no length to refuse up front: the server cuts it off once past the limit. The client (a raw
    /// socket: HttpClient waits for its body to finish) sends one chunk just past the limit and then waits, so the server
    /// has read all it was sent and its answer is never raced by a write.
    /// </summary>
    [Fact]
    public async Task A_chunked_body_is_cut_off_at_the_limit()
    {
        var url = new Uri(server.BaseUrl);
        using var tcp = new System.Net.Sockets.TcpClient();
        await tcp.ConnectAsync(url.Host, url.Port, Ct);
        var stream = tcp.GetStream();
        byte[] json = [.. "{\"prompt\":\""u8, .. Enumerable.Repeat((byte)'a', (16 << 20) + 1)];
        string head = $"POST /v1/completions HTTP/1.1\r\nHost: {url.Authority}\r\nAuthorization: Bearer {ServerFixture.ApiKey}\r\n" +
                      $"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{json.Length:x}\r\n";
        await stream.WriteAsync(System.Text.Encoding.ASCII.GetBytes(head), Ct);
        await stream.WriteAsync(json, Ct);
        await stream.WriteAsync("\r\n"u8.ToArray(), Ct); // no last chunk: the body is never finished

        string response = await new StreamReader(stream).ReadToEndAsync(Ct); // the server closes after its answer
        Assert.StartsWith("HTTP/1.1 413", response);
        AssertJsonError(HttpStatusCode.RequestEntityTooLarge, response[response.IndexOf('{')..(response.LastIndexOf('}') + 1)]); // one chunk or none
    }
}
