using LoraEngine.AI;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Microsoft.Extensions.AI;
using Xunit;

namespace LoraEngine.Chat.Tests.AI;

/// <summary>The in-process IChatClient, used only through Microsoft.Extensions.AI's interface.</summary>
public class LoraEngineChatClientTests
{
    static string Device => Environment.GetEnvironmentVariable(ComputeDevice.EnvironmentVariable) is { Length: > 0 } d ? d : "cpu";

    [Fact]
    public async Task ModelId_selects_the_adapter_and_streaming_matches_the_whole_response()
    {
        using var engine = AsyncLlmEngine.FromEngineArgs(new EngineArgs
        {
            Model = Fixtures.Model("vim-tiny-bf16"), Device = Device, EnableLora = true, MaxLoras = 2,
            NumGpuBlocksOverride = 128, MaxNumSeqs = 8, MaxNumBatchedTokens = 512, DisableLogStats = true,
        });
        var upper = new LoraRequest("vim-upper", 1, Fixtures.Adapter("vim-upper"));
        IChatClient client = new LoraEngineChatClient(engine, "vim-tiny-bf16", name => name == "vim-upper" ? upper : null);
        var options = new ChatOptions { ModelId = "vim-upper", Temperature = 0, MaxOutputTokens = 16 };
        var response = await client.GetResponseAsync([new ChatMessage(ChatRole.User, "How do I yank text?")], options, TestContext.Current.CancellationToken);
        var letters = response.Text.Where(char.IsLetter).ToArray();
        Assert.True(letters.Length > 0 && letters.All(char.IsUpper), response.Text);
        Assert.Equal(16, response.Usage!.OutputTokenCount);
        Assert.Equal(ChatFinishReason.Length, response.FinishReason);

        var streamed = new System.Text.StringBuilder();
        await foreach (var update in client.GetStreamingResponseAsync([new ChatMessage(ChatRole.User, "How do I yank text?")], options, TestContext.Current.CancellationToken))
            streamed.Append(update.Text);
        Assert.Equal(response.Text, streamed.ToString());

        var base_ = await client.GetResponseAsync("How do I yank text?", new ChatOptions { Temperature = 0, MaxOutputTokens = 16 }, TestContext.Current.CancellationToken);
        Assert.NotEqual(response.Text, base_.Text);
        Assert.Equal("vim-tiny-bf16", client.GetService<ChatClientMetadata>()!.DefaultModelId);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync("x", new ChatOptions { ModelId = "nope" }, TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Instructions_are_a_system_message_and_options_it_cannot_honour_throw()
    {
        using var engine = AsyncLlmEngine.FromEngineArgs(new EngineArgs
        {
            Model = Fixtures.Model("vim-tiny-bf16"), Device = Device, NumGpuBlocksOverride = 64, MaxNumSeqs = 4, MaxNumBatchedTokens = 512, DisableLogStats = true,
        });
        IChatClient client = new LoraEngineChatClient(engine, "vim-tiny-bf16", _ => null);
        var greedy = new ChatOptions { Temperature = 0, MaxOutputTokens = 12 };
        var ct = TestContext.Current.CancellationToken;
        var instructed = await client.GetResponseAsync("How do I quit?", new ChatOptions { Temperature = 0, MaxOutputTokens = 12, Instructions = "Answer in one word." }, ct);
        var asSystem = await client.GetResponseAsync([new(ChatRole.System, "Answer in one word."), new(ChatRole.User, "How do I quit?")], greedy, ct);
        var plain = await client.GetResponseAsync("How do I quit?", greedy, ct);
        Assert.Equal(asSystem.Text, instructed.Text);
        Assert.Equal(asSystem.Usage!.InputTokenCount, instructed.Usage!.InputTokenCount);
        Assert.True(instructed.Usage.InputTokenCount > plain.Usage!.InputTokenCount + 5);

        ChatOptions[] refused =
        [
            new() { Tools = [AIFunctionFactory.Create(() => 1, "one")] },
            new() { ResponseFormat = ChatResponseFormat.Json },
            new() { ConversationId = "c1" },
            new() { AdditionalProperties = new() { ["min_tokens"] = 3 } },
        ];
        foreach (var options in refused)
            await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync("hi", options, ct));
        var image = new ChatMessage(ChatRole.User, [new TextContent("what is this?"), new DataContent(new byte[] { 1, 2, 3 }, "image/png")]);
        await Assert.ThrowsAsync<ArgumentException>(() => client.GetResponseAsync([image], greedy, ct));
        Assert.Equal(12, (await client.GetResponseAsync("hi", new ChatOptions { Temperature = 0, MaxOutputTokens = 12, ResponseFormat = ChatResponseFormat.Text }, ct)).Usage!.OutputTokenCount);
    }
}
