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
}
