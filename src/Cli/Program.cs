using LoraEngine.Cli;

// loraengine: generate text, serve the OpenAI-compatible API, describe the setup, or benchmark.
return await CliApp.RunAsync(args, Console.Error);
