namespace LoraEngine;

/// <summary>
/// Offline batch generation like vLLM's <c>LLM</c>: submit every prompt, step the engine until all finish, and
/// return the final outputs in prompt order. Shows a progress bar when attached to a console.
/// </summary>
public sealed class Llm : IDisposable
{
    /// <summary>Builds an engine with vLLM's LLM-class defaults (<see cref="UsageContext.LlmClass"/>: an 8192-token step budget).</summary>
    public Llm(EngineArgs engineArgs) => Engine = LlmEngine.FromEngineArgs(engineArgs, UsageContext.LlmClass);

    /// <summary>Wraps an engine, which this object now owns (disposing it disposes the engine).</summary>
    public Llm(LlmEngine engine) => Engine = engine ?? throw new ArgumentNullException(nameof(engine));

    /// <summary>The engine underneath: adapters, tokenizer, metrics.</summary>
    public LlmEngine Engine { get; }

    /// <summary>Generates for every prompt with one adapter (or none) for all.</summary>
    public IReadOnlyList<RequestOutput> Generate(IReadOnlyList<string> prompts, SamplingParams? samplingParams = null, LoraRequest? loraRequest = null, bool useProgressBar = true) =>
        Generate(prompts, samplingParams, prompts.Select(_ => loraRequest).ToArray(), useProgressBar);

    /// <summary>Generates for every prompt with its own adapter (null: the base model).</summary>
    public IReadOnlyList<RequestOutput> Generate(IReadOnlyList<string> prompts, SamplingParams? samplingParams, IReadOnlyList<LoraRequest?> loraRequests, bool useProgressBar = true)
    {
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentNullException.ThrowIfNull(loraRequests);
        if (loraRequests.Count != prompts.Count)
            throw new ArgumentException($"{loraRequests.Count} LoRA requests for {prompts.Count} prompts", nameof(loraRequests));
        // As vLLM's LLM: only the final outputs are wanted, so steps build no others.
        var sampling = (samplingParams ?? new SamplingParams()) with { OutputKind = RequestOutputKind.FinalOnly };
        string batchId = Guid.NewGuid().ToString("N")[..8];
        var ids = new string[prompts.Count];
        for (int i = 0; i < prompts.Count; i++)
        {
            ids[i] = $"{batchId}-{i}";
            Engine.AddRequest(ids[i], prompts[i], sampling, loraRequests[i]);
        }

        var finished = new Dictionary<string, RequestOutput>();
        var progress = useProgressBar && !Console.IsOutputRedirected ? new ConsoleProgress(prompts.Count) : null;
        while (Engine.HasUnfinishedRequests && finished.Count < ids.Length)
        {
            foreach (var output in Engine.Step())
                if (output.Finished && finished.TryAdd(output.RequestId, output))
                    progress?.Report(finished.Count, output.Outputs.Sum(o => o.TokenIds.Count));
        }
        progress?.Done();
        return ids.Select(id => finished[id]).ToArray();
    }

    /// <summary>Disposes the engine and the device memory behind it.</summary>
    public void Dispose() => Engine.Dispose();

    /// <summary>A one-line progress bar: done/total, elapsed time and output tokens per second.</summary>
    sealed class ConsoleProgress(int total)
    {
        readonly System.Diagnostics.Stopwatch _clock = System.Diagnostics.Stopwatch.StartNew();
        long _tokens;

        public void Report(int done, int newTokens)
        {
            _tokens += newTokens;
            int width = 30, filled = total == 0 ? width : done * width / total;
            double tps = _tokens / Math.Max(_clock.Elapsed.TotalSeconds, 1e-9);
            Console.Write($"\rProcessed prompts: [{new string('#', filled)}{new string('.', width - filled)}] {done}/{total} {_clock.Elapsed:mm\\:ss} {tps:F1} tok/s ");
        }

        public void Done() => Console.WriteLine();
    }
}
