using System.Net;
using System.Text.Json;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>/tokenize, /detokenize, /v1/models/{id} and X-Request-Id, shaped as vLLM's.</summary>
public class TokenizeAndModelsTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    readonly ApiCalls _api = new(server);

    static int[] Ints(JsonElement list) => list.EnumerateArray().Select(t => t.GetInt32()).ToArray();

    [Fact]
    public async Task Tokenize_gives_what_the_engine_is_fed_and_detokenize_reverses_it()
    {
        var reply = await _api.Post("/tokenize", new { model = "vim-upper", prompt = "Vim is a text editor", return_token_strs = true });
        var tokens = Ints(reply.Body.GetProperty("tokens"));
        Assert.Equal(0, tokens[0]); // BOS
        Assert.Equal(tokens.Length, reply.Body.GetProperty("count").GetInt32());
        Assert.Equal(512, reply.Body.GetProperty("max_model_len").GetInt32());
        Assert.Equal("<|begin_of_text|>", reply.Body.GetProperty("token_strs")[0].GetString());
        var completion = await _api.Post("/v1/completions", new { prompt = "Vim is a text editor", max_tokens = 1 });
        Assert.Equal(tokens.Length, completion.Usage("prompt_tokens"));
        Assert.Equal(tokens[1..], Ints((await _api.Post("/tokenize", new { prompt = "Vim is a text editor", add_special_tokens = false })).Body.GetProperty("tokens")));

        var text = await _api.Post("/detokenize", new { tokens = tokens[1..] });
        Assert.Equal("Vim is a text editor", text.Body.GetProperty("prompt").GetString());
        Assert.Equal("tokens", (await _api.Post("/detokenize", new { tokens = new[] { 5, 1024 } })).Param);
        Assert.Equal(HttpStatusCode.NotFound, (await _api.Post("/tokenize", new { model = "nope", prompt = "x" })).Status);
        Assert.Equal("prompt", (await _api.Post("/tokenize", new { })).Param);
        // Chat-template fields with a prompt are refused, not ignored.
        Assert.Equal("messages", (await _api.Post("/tokenize", new { prompt = "x", documents = new[] { new { title = "t", text = "d" } } })).Param);
        Assert.Equal("messages", (await _api.Post("/tokenize", new { prompt = "x", reasoning_effort = "low" })).Param);
    }

    [Fact]
    public async Task Tokenized_messages_are_the_chat_prompt()
    {
        var messages = new[] { new { role = "system", content = "Be brief." }, new { role = "user", content = "How do I quit?" } };
        var tokens = (await _api.Post("/tokenize", new { messages })).Body.GetProperty("count").GetInt32();
        var chat = await _api.Post("/v1/chat/completions", new { messages, max_tokens = 1 });
        Assert.Equal(tokens, chat.Usage("prompt_tokens"));
    }

    [Fact]
    public async Task A_model_is_found_by_id_and_an_unknown_one_is_404()
    {
        var upper = await _api.Get("/v1/models/vim-upper");
        Assert.Equal("vim-upper", upper.Body.GetProperty("id").GetString());
        Assert.Equal("vim-tiny-bf16", upper.Body.GetProperty("parent").GetString());
        Assert.Equal(512, (await _api.Get("/v1/models/vim-tiny-bf16")).Body.GetProperty("max_model_len").GetInt32());
        var missing = await _api.Get("/v1/models/no-such-model");
        Assert.Equal(HttpStatusCode.NotFound, missing.Status);
        Assert.Equal("NotFoundError", missing.Error.GetProperty("type").GetString());
    }

    [Fact]
    public async Task X_request_id_is_echoed_and_names_the_request()
    {
        var completion = await _api.Post("/v1/completions", new { prompt = "Vim is", max_tokens = 1 }, requestId: "trace-42");
        Assert.Equal("trace-42", completion.Response.Headers.GetValues("X-Request-Id").Single());
        Assert.Equal("cmpl-trace-42", completion.Body.GetProperty("id").GetString());
        var chat = await _api.Post("/v1/chat/completions", new { messages = new[] { new { role = "user", content = "hi" } }, max_tokens = 1 }, requestId: "trace-43");
        Assert.Equal("chatcmpl-trace-43", chat.Body.GetProperty("id").GetString());
        var refused = await _api.Post("/v1/completions", new { prompt = "x", bogus = 1 }, requestId: "trace-44");
        Assert.Equal("trace-44", refused.Response.Headers.GetValues("X-Request-Id").Single());

        var fromBody = await _api.Post("/v1/completions", new { prompt = "Vim is", max_tokens = 1, request_id = "body-1" });
        Assert.Equal("cmpl-body-1", fromBody.Body.GetProperty("id").GetString());
        Assert.Equal("body-1", fromBody.Response.Headers.GetValues("X-Request-Id").Single());
        var generated = await _api.Post("/v1/completions", new { prompt = "Vim is", max_tokens = 1 });
        Assert.Equal("cmpl-" + generated.Response.Headers.GetValues("X-Request-Id").Single(), generated.Body.GetProperty("id").GetString());
    }
}
