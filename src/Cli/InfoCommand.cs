using System.CommandLine;
using LoraEngine.Tensors;

namespace LoraEngine.Cli;

/// <summary><c>loraengine info</c>: devices found, the model's config, and the engine's memory plan.</summary>
internal static class InfoCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var command = new Command("info", "Show devices, model config and memory plan");
        common.AddTo(command);
        command.SetAction(p =>
        {
            foreach (var kind in new[] { "cuda", "opencl", "cpu" })
            {
                try
                {
                    using var d = ComputeDevice.Create(kind);
                    Console.WriteLine($"device {kind}: {d.Name}, {d.MemorySize / (1024 * 1024)} MiB");
                }
                catch (InvalidOperationException e)
                {
                    Console.WriteLine($"device {kind}: none ({e.Message})");
                }
            }
            var args = common.EngineArgs(p) with { DisableLogStats = true };
            var config = args.CreateEngineConfig();
            var c = config.ModelConfig;
            Console.WriteLine($"model {args.Model}: hidden {c.HiddenSize}, {c.NumHiddenLayers} layers, {c.NumAttentionHeads} heads / {c.NumKeyValueHeads} KV heads of {c.HeadDim}, " +
                              $"MLP {c.IntermediateSize}, vocab {c.VocabSize}, max positions {c.MaxPositionEmbeddings}, {c.TorchDtype}, tied {c.TieWordEmbeddings}");
            using var engine = LlmEngine.FromEngineArgs(args);
            Console.WriteLine($"memory plan: {engine.MemoryPlan}");
            Console.WriteLine($"max model len {config.MaxModelLen}, max batched tokens {config.MaxNumBatchedTokens}, LoRA slots {args.MaxLoras} of rank {args.MaxLoraRank}");
            return 0;
        });
        return command;
    }
}
