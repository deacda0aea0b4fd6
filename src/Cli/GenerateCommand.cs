using System.CommandLine;

namespace LoraEngine.Cli;

/// <summary><c>loraengine generate "prompt"</c>: streams the continuation to stdout.</summary>
internal static class GenerateCommand
{
    public static Command Create()
    {
        var common = new CommonOptions();
        var prompt = new Argument<string>("prompt") { Description = "The prompt text" };
        var lora = new Option<string?>("--lora") { Description = "Adapter: name=path, or a shipped one (vim-upper, vim-rot13)" };
        var temperature = new Option<double>("--temperature") { DefaultValueFactory = _ => 0.0, Description = "0 = greedy" };
        var topP = new Option<double>("--top-p") { DefaultValueFactory = _ => 1.0 };
        var topK = new Option<int>("--top-k") { DefaultValueFactory = _ => 0 };
        var maxTokens = new Option<int>("--max-tokens") { DefaultValueFactory = _ => 64 };
        var seed = new Option<long?>("--seed");
        var command = new Command("generate", "Generate text from a prompt, streamed") { prompt, lora, temperature, topP, topK, maxTokens, seed };
        common.AddTo(command);
        command.SetAction(async (p, ct) =>
        {
            // One request: one sequence per step unless --max-num-seqs says otherwise (it sizes the step buffers).
            int seqs = p.GetResult(common.MaxNumSeqs) is { Implicit: false } ? p.GetValue(common.MaxNumSeqs) : 1;
            var args = common.EngineArgs(p) with { MaxNumSeqs = seqs, MaxNumBatchedTokens = Math.Max(512, seqs), DisableLogStats = true };
            LoraRequest? request = null;
            if (p.GetValue(lora) is { } value)
            {
                var (name, path) = CommonOptions.ParseLora(value);
                request = new LoraRequest(name, 1, path);
            }
            var sampling = new SamplingParams
            {
                Temperature = p.GetValue(temperature), TopP = p.GetValue(topP), TopK = p.GetValue(topK),
                MaxTokens = p.GetValue(maxTokens), Seed = p.GetValue(seed),
            };
            using var engine = new AsyncLlmEngine(LlmEngine.FromEngineArgs(args));
            string text = p.GetValue(prompt)!;
            var outputs = engine.GenerateAsync(text, sampling, request, cancellationToken: ct); // checks everything before anything is printed
            Console.Write(text);
            int shown = 0;
            await foreach (var output in outputs)
            {
                string all = output.Outputs[0].Text;
                Console.Write(all[shown..]);
                shown = all.Length;
            }
            Console.WriteLine();
            return 0;
        });
        return command;
    }
}
