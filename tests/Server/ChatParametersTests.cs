using System.ClientModel;
using System.Net;
using System.Text.Json;
using OpenAI;
using OpenAI.Chat;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>Chat parameters through the official OpenAI .NET client where it has them, raw HTTP otherwise.</summary>
public class ChatParametersTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    const string Question = "How do I delete a line?";
    readonly ApiCalls _api = new(server);

    static CancellationToken Token => TestContext.Current.CancellationToken;

    ChatClient Client() =>
        new OpenAIClient(new ApiKeyCredential(ServerFixture.ApiKey), new OpenAIClientOptions { Endpoint = new Uri(server.BaseUrl + "/v1") }).GetChatClient("vim-tiny-bf16");

    Task<ApiCalls.Reply> Chat(object extra) => _api.Post("/v1/chat/completions",
        CompletionParametersTests.Merge(new { messages = new[] { new { role = "user", content = Question } }, max_tokens = 8, temperature = 0 }, extra));

    async Task<int[]> Tokenize(object body) =>
        (await _api.Post("/tokenize", body)).Body.GetProperty("tokens").EnumerateArray().Select(t => t.GetInt32()).ToArray();

    [Fact]
    public async Task Logit_bias_from_the_openai_client_forces_the_token()
    {
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 5 };
        options.LogitBiases[77] = 100;
        var completion = (await Client().CompleteChatAsync([new UserChatMessage(Question)], options, Token)).Value;
        var expected = string.Concat(Enumerable.Repeat((await _api.Post("/detokenize", new { tokens = new[] { 77 } })).Body.GetProperty("prompt").GetString(), 5));
        Assert.Equal(expected, completion.Content[0].Text);
    }

    [Fact]
    public async Task Logprobs_stream_through_the_openai_client_and_match_the_whole_response()
    {
        var options = new ChatCompletionOptions { Temperature = 0, MaxOutputTokenCount = 8, IncludeLogProbabilities = true, TopLogProbabilityCount = 2 };
        var whole = (await Client().CompleteChatAsync([new UserChatMessage(Question)], options, Token)).Value.ContentTokenLogProbabilities;
        var streamed = new List<ChatTokenLogProbabilityDetails>();
        ChatTokenUsage? usage = null;
        await foreach (var update in Client().CompleteChatStreamingAsync([new UserChatMessage(Question)], options, Token))
        {
            streamed.AddRange(update.ContentTokenLogProbabilities);
            usage ??= update.Usage; // the client asks for stream_options.include_usage
        }
        Assert.Equal(8, usage!.OutputTokenCount);
        Assert.Equal(8, whole.Count);
        Assert.Equal(whole.Select(t => (t.Token, t.LogProbability)), streamed.Select(t => (t.Token, t.LogProbability)));
        Assert.All(streamed, t => Assert.Equal(2, t.TopLogProbabilities.Count));
    }

    [Fact]
    public async Task Response_format_and_tools_are_refused_through_the_openai_client()
    {
        var json = new ChatCompletionOptions { ResponseFormat = ChatResponseFormat.CreateJsonObjectFormat() };
        var e = await Assert.ThrowsAsync<ClientResultException>(() => Client().CompleteChatAsync([new UserChatMessage(Question)], json, Token));
        Assert.Equal(400, e.Status);
        Assert.Contains("response_format", e.Message);
        var tools = new ChatCompletionOptions { Tools = { ChatTool.CreateFunctionTool("get_weather", "the weather") } };
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client().CompleteChatAsync([new UserChatMessage(Question)], tools, Token));
        Assert.Equal(400, e.Status);
        Assert.Contains("tools", e.Message);
        var stored = new ChatCompletionOptions { StoredOutputEnabled = true };
        e = await Assert.ThrowsAsync<ClientResultException>(() => Client().CompleteChatAsync([new UserChatMessage(Question)], stored, Token));
        Assert.Equal(400, e.Status);
        var text = new ChatCompletionOptions { ResponseFormat = ChatResponseFormat.CreateTextFormat(), MaxOutputTokenCount = 2, EndUserId = "u1", Metadata = { ["team"] = "a" } };
        Assert.Equal(2, (await Client().CompleteChatAsync([new UserChatMessage(Question)], text, Token)).Value.Usage.OutputTokenCount);
    }

    [Fact]
    public async Task Text_parts_join_with_newlines_and_roles_are_checked()
    {
        var parts = await Tokenize(new { messages = new object[] { new { role = "user", content = new[] { new { type = "text", text = "a" }, new { type = "text", text = "b" } } } } });
        Assert.Equal(await Tokenize(new { messages = new[] { new { role = "user", content = "a\nb" } } }), parts);
        foreach (var role in new[] { "system", "developer", "assistant", "tool" })
            Assert.Equal(HttpStatusCode.OK, (await Chat(new { messages = new[] { new { role, content = "x" }, new { role = "user", content = "y" } }, max_tokens = 1 })).Status);
        Assert.Equal("messages[0].role", (await Chat(new { messages = new[] { new { role = "wizard", content = "x" } } })).Param);
        Assert.Equal("messages[0].content[0]",
            (await Chat(new { messages = new[] { new { role = "user", content = new object[] { new { type = "image_url", image_url = new { url = "http://x/y.png" } } } } } })).Param);
        Assert.Equal("messages[0].content[1]",
            (await Chat(new { messages = new[] { new { role = "user", content = new object[] { new { type = "text", text = "a" }, new { type = "input_audio" } } } } })).Param);
        Assert.Equal("messages[0].bogus", (await Chat(new { messages = new[] { new { role = "user", content = "x", bogus = 1 } } })).Param);
    }

    // Issue 11 item 4: each of these was a 500 with an empty body.
    [Theory]
    [InlineData("""[{"role": "user", "content": ["hi"]}]""", "messages[0].content[0]")]
    [InlineData("""[{"role": "user", "content": [{"type": "text", "text": 5}]}]""", "messages[0].content[0].text")]
    [InlineData("""[null]""", "messages[0]")]
    [InlineData("""[{"role": "user", "content": [{"type": "text", "text": "hi", "cache_control": {"type": "ephemeral"}}]}]""", "messages[0].content[0].cache_control")]
    public async Task Malformed_messages_are_a_400_naming_the_field(string messages, string param)
    {
        var reply = await _api.PostRaw("/v1/chat/completions", $$"""{"messages": {{messages}}, "max_tokens": 2}""");
        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal(param, reply.Param);
        Assert.Equal("BadRequestError", reply.Error.GetProperty("type").GetString());
    }

    // top_logprobs and max_completion_tokens reach the engine as logprobs and max_tokens: the error names the chat field.
    [Theory]
    [InlineData("""{"logprobs": true, "top_logprobs": 21}""", "top_logprobs", "Requested top_logprobs of 21")]
    [InlineData("""{"max_completion_tokens": -5}""", "max_completion_tokens", "max_completion_tokens must be at least 1")]
    [InlineData("""{"max_tokens": -5}""", "max_tokens", "max_tokens must be at least 1")]
    public async Task Out_of_range_chat_fields_are_a_400_naming_the_chat_field(string fields, string param, string message)
    {
        var reply = await _api.PostRaw("/v1/chat/completions", $$"""{"messages": [{"role": "user", "content": "hi"}], {{fields[1..^1]}}}""");
        Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
        Assert.Equal(param, reply.Param);
        Assert.StartsWith(message, reply.Error.GetProperty("message").GetString());
    }

    // The fixture's template reads role, content, bos_token and add_generation_prompt only: these changed nothing.
    [Theory]
    [InlineData("""{"documents": [{"title": "t", "text": "d"}]}""", "documents")]
    [InlineData("""{"reasoning_effort": "low"}""", "reasoning_effort")]
    [InlineData("""{"chat_template_kwargs": {"enable_thinking": true}}""", "chat_template_kwargs")]
    [InlineData("""{"messages": [{"role": "user", "content": "hi", "name": "bob"}]}""", "messages[0].name")]
    [InlineData("""{"messages": [{"role": "assistant", "content": null, "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}""", "messages[0].tool_calls")]
    public async Task Template_variables_the_chat_template_never_reads_are_a_400(string fields, string param)
    {
        string body = fields.Contains("\"messages\"") ? fields : $$"""{"messages": [{"role": "user", "content": "hi"}], {{fields[1..^1]}}}""";
        foreach (string route in new[] { "/v1/chat/completions", "/tokenize" })
        {
            var reply = await _api.PostRaw(route, body);
            Assert.Equal(HttpStatusCode.BadRequest, reply.Status);
            Assert.Equal(param, reply.Param);
            Assert.Contains("chat template", reply.Error.GetProperty("message").GetString());
        }
    }

    [Fact]
    public async Task Add_generation_prompt_continue_final_message_and_template_kwargs_change_the_prompt()
    {
        object[] chat = [new { role = "user", content = Question }, new { role = "assistant", content = "Type dd to" }];
        var closed = await Tokenize(new { messages = chat, add_generation_prompt = false });
        var open = await Tokenize(new { messages = chat, add_generation_prompt = false, continue_final_message = true });
        var withPrompt = await Tokenize(new { messages = chat });
        Assert.True(withPrompt.Length > closed.Length);
        Assert.Equal(closed[..open.Length], open);
        Assert.Equal(4, closed[^1]); // <|eot_id|> closes the assistant turn...
        Assert.NotEqual(4, open[^1]); // ...unless it is continued
        var noBos = await Tokenize(new { messages = chat, add_generation_prompt = false, chat_template_kwargs = new { bos_token = "" } });
        Assert.Equal(closed[1..], noBos);
        Assert.Equal("chat_template_kwargs", (await Chat(new { chat_template_kwargs = new { messages = "x" } })).Param);
        Assert.Equal("continue_final_message", (await Chat(new { continue_final_message = true })).Param);

        var continued = await Chat(new { messages = chat, add_generation_prompt = false, continue_final_message = true });
        Assert.Equal(open.Length, continued.Usage("prompt_tokens"));
    }

    [Fact]
    public async Task Echo_prepends_the_continued_assistant_message_streamed_or_not()
    {
        object[] chat = [new { role = "user", content = Question }, new { role = "assistant", content = "Type dd to" }];
        var body = new { messages = chat, add_generation_prompt = false, continue_final_message = true, max_tokens = 6, temperature = 0 };
        var plain = await Chat(body);
        var echoed = await Chat(CompletionParametersTests.Merge(body, new { echo = true }));
        Assert.Equal("Type dd to" + plain.Content(), echoed.Content());
        Assert.Equal("assistant", echoed.Choice().GetProperty("message").GetProperty("role").GetString());
        var chunks = await _api.Stream("/v1/chat/completions", CompletionParametersTests.Merge(body, new { echo = true, stream = true }));
        string streamed = string.Concat(chunks.Select(c => c.GetProperty("choices")[0].GetProperty("delta"))
            .Select(d => d.TryGetProperty("content", out var t) ? t.GetString() : ""));
        Assert.Equal(echoed.Content(), streamed);
        // The last message is the user's: the reply (an assistant's) does not repeat it.
        Assert.Equal((await Chat(new { })).Content(), (await Chat(new { echo = true })).Content());
    }

    [Fact]
    public async Task Prompt_logprobs_sit_beside_the_choices_and_usage_streams()
    {
        var reply = await Chat(new { prompt_logprobs = 0 });
        var lp = reply.Body.GetProperty("prompt_logprobs");
        Assert.Equal(reply.Usage("prompt_tokens"), lp.GetArrayLength());
        Assert.Equal(JsonValueKind.Null, lp[0].ValueKind);
        Assert.Single(lp[1].EnumerateObject());
        var chunks = await _api.Stream("/v1/chat/completions", new
        {
            messages = new[] { new { role = "user", content = Question } }, max_tokens = 4, temperature = 0, ignore_eos = true, stream = true,
            stream_options = new { include_usage = true, continuous_usage_stats = true },
        });
        Assert.All(chunks, c => Assert.True(c.TryGetProperty("usage", out _)));
        Assert.Equal(4, chunks[^1].GetProperty("usage").GetProperty("completion_tokens").GetInt32());

        var two = await _api.Stream("/v1/chat/completions", new { messages = new[] { new { role = "user", content = Question } }, max_tokens = 4, n = 2, seed = 1, stream = true });
        var choices = two.Select(c => c.GetProperty("choices")[0]).ToList();
        foreach (int i in new[] { 0, 1 })
        {
            var mine = choices.Where(c => c.GetProperty("index").GetInt32() == i).ToList();
            Assert.Equal("assistant", mine[0].GetProperty("delta").GetProperty("role").GetString());
            Assert.Single(mine, c => c.GetProperty("finish_reason").ValueKind == JsonValueKind.String);
        }
        Assert.Equal("top_logprobs", (await Chat(new { top_logprobs = 2 })).Param);
    }
}
