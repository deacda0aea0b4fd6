using System.CommandLine;
using LoraEngine.Cli;

// loraengine: generate text, serve the OpenAI-compatible API, describe the setup, or benchmark.
var root = new RootCommand("LoraEngine: multi-LoRA Llama serving in managed C#")
{
    GenerateCommand.Create(),
    ServeCommand.Create(),
    InfoCommand.Create(),
    BenchCommand.Create(),
};
return await root.Parse(args).InvokeAsync();
