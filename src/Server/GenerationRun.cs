namespace LoraEngine.Server;

/// <summary>
/// The engine requests behind one HTTP request — one per prompt — read as a single stream of (prompt index, output)
/// as they come, like vLLM's merge_async_iterators. Disposing it ends every request that has not finished: a client
/// that goes away, or a failure of one prompt, frees the KV blocks and adapter pins of all of them.
/// </summary>
internal sealed class GenerationRun : IAsyncDisposable
{
    readonly AsyncLlmEngine _engine;
    readonly CancellationTokenSource _cancel;
    readonly List<string> _ids = new();
    readonly List<IAsyncEnumerator<RequestOutput>> _streams = new();
    readonly Dictionary<Task<bool>, int> _pending = new();
    bool _started;

    GenerationRun(AsyncLlmEngine engine, CancellationToken aborted)
    {
        _engine = engine;
        _cancel = CancellationTokenSource.CreateLinkedTokenSource(aborted);
    }

    /// <summary>Adds one engine request per prompt (ids[i] for prompts[i]); a refused one ends those already added.</summary>
    public static GenerationRun Start(AsyncLlmEngine engine, IReadOnlyList<EnginePrompt> prompts, SamplingParams sampling, LoraRequest? lora,
        IReadOnlyList<string> ids, string? cacheSalt, CancellationToken aborted)
    {
        var run = new GenerationRun(engine, aborted);
        try
        {
            for (int i = 0; i < prompts.Count; i++)
            {
                var outputs = engine.GenerateAsync(prompts[i].TokenIds, sampling, lora, ids[i], cacheSalt, run._cancel.Token);
                run._ids.Add(ids[i]);
                run._streams.Add(outputs.GetAsyncEnumerator(run._cancel.Token));
            }
        }
        catch
        {
            run.AbortUnstarted();
            run._cancel.Dispose();
            throw;
        }
        return run;
    }

    /// <summary>Every output of every prompt, as it comes; each prompt's last has Finished set.</summary>
    public async IAsyncEnumerable<(int Prompt, RequestOutput Output)> ReadAllAsync()
    {
        _started = true;
        for (int i = 0; i < _streams.Count; i++) _pending[_streams[i].MoveNextAsync().AsTask()] = i;
        while (_pending.Count > 0)
        {
            var done = await Task.WhenAny(_pending.Keys);
            int i = _pending[done];
            _pending.Remove(done);
            if (!await done) continue;
            yield return (i, _streams[i].Current);
            _pending[_streams[i].MoveNextAsync().AsTask()] = i;
        }
    }

    /// <summary>The final output of each prompt, in prompt order.</summary>
    public async Task<RequestOutput[]> FinalOutputsAsync()
    {
        var finals = new RequestOutput[_streams.Count];
        await foreach (var (i, output) in ReadAllAsync()) finals[i] = output;
        for (int i = 0; i < finals.Length; i++)
            if (finals[i] is not { Finished: true }) throw new InvalidOperationException($"request {_ids[i]} ended before it finished");
        return finals;
    }

    public async ValueTask DisposeAsync()
    {
        // Cancelling ends the pending reads; disposing each stream then aborts its request unless it finished.
        await _cancel.CancelAsync();
        foreach (var task in _pending.Keys)
        {
            try
            {
                await task;
            }
            catch
            {
                // Cancelled, or failing with the error the reader already got: nothing more to report.
            }
        }
        foreach (var stream in _streams) await stream.DisposeAsync();
        if (!_started) AbortUnstarted();
        _cancel.Dispose();
    }

    /// <summary>Streams never read run no cleanup of their own: abort their requests here.</summary>
    void AbortUnstarted()
    {
        foreach (string id in _ids) _engine.Abort(id);
    }
}
