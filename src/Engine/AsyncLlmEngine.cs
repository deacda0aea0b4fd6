using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;
using LoraEngine.Core;

namespace LoraEngine;

/// <summary>
/// The engine behind an async API (vLLM's AsyncLLM). A request is processed on the caller's thread (checked,
/// tokenised, its adapter read if it must be) and handed to the engine loop through a channel, so adding or aborting
/// never waits for a step and no request thread ever blocks on the engine (blocked pool threads starved the step's
/// parallel work on a cold server). The loop runs on a dedicated thread, not the thread pool: it takes what arrived,
/// steps while anything is unfinished and routes each <see cref="RequestOutput"/> to its request's stream.
/// Cancelling a stream (a client that disconnects) aborts the request, which frees its KV blocks before the next step.
/// A request the engine fails ends its stream with <see cref="EngineGenerateException"/>; a device failure or a
/// shutdown ends every stream with <see cref="EngineDeadException"/>.
/// </summary>
public sealed class AsyncLlmEngine : IDisposable
{
    abstract record Command;

    sealed record Add(EngineCoreRequest Request, Channel<RequestOutput> Stream) : Command;

    sealed record Cancel(string RequestId) : Command;

    readonly ConcurrentDictionary<string, Channel<RequestOutput>> _streams = new();
    readonly Channel<Command> _intake = Channel.CreateUnbounded<Command>(new UnboundedChannelOptions { SingleReader = true });
    readonly CancellationTokenSource _stop = new();
    readonly Thread _loop;
    long _nextId;
    volatile string? _closed; // why new requests are refused, once AbortAll ran

    /// <summary>Starts the step loop over <paramref name="engine"/>, which this object now owns (disposing it disposes the engine).</summary>
    public AsyncLlmEngine(LlmEngine engine)
    {
        Engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _loop = new Thread(RunLoop) { IsBackground = true, Name = "LoraEngine step loop" };
        _loop.Start();
    }

    /// <summary>Builds the engine (<see cref="LlmEngine.FromEngineArgs"/>, with vLLM's server defaults) and starts its step loop.</summary>
    public static AsyncLlmEngine FromEngineArgs(EngineArgs engineArgs, IReadOnlyList<IStatLoggerFactory>? statLoggers = null) =>
        new(LlmEngine.FromEngineArgs(engineArgs, UsageContext.OpenAiApiServer, statLoggers));

    /// <summary>The engine underneath: its tokenizer, adapters, metrics and limits. Step it only through this object's loop.</summary>
    public LlmEngine Engine { get; }

    /// <summary>Requests whose stream is open (0 once every one finished, failed or was aborted).</summary>
    public int NumOpenStreams => _streams.Count;

    /// <summary>True once a step failed on the device: every request failed and no new one is accepted.</summary>
    public bool Errored => Engine.Errored;

    /// <summary>Throws <see cref="EngineDeadException"/> when the engine stopped (vLLM's check_health).</summary>
    public void CheckHealth() => Engine.CheckHealth();

    /// <summary>True while the step loop runs: false once disposed (or if the loop thread ever died).</summary>
    public bool IsRunning => !_stop.IsCancellationRequested && _loop.IsAlive;

    /// <summary>Streams the outputs of one request (each a cumulative snapshot, the last with Finished = true).</summary>
    public IAsyncEnumerable<RequestOutput> GenerateAsync(string prompt, SamplingParams samplingParams, LoraRequest? loraRequest = null,
        string? requestId = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(prompt, samplingParams, loraRequest, requestId, cacheSalt: null, cancellationToken);

    /// <summary>Streams the outputs of one request given as token ids.</summary>
    public IAsyncEnumerable<RequestOutput> GenerateAsync(IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest = null,
        string? requestId = null, CancellationToken cancellationToken = default) =>
        GenerateAsync(promptTokenIds, samplingParams, loraRequest, requestId, cacheSalt: null, cancellationToken);

    /// <summary>Streams the outputs of one request given as text, with vLLM's cache_salt (see <see cref="LlmEngine.AddRequest(string, string, SamplingParams, LoraRequest?, string?)"/>).</summary>
    public IAsyncEnumerable<RequestOutput> GenerateAsync(string prompt, SamplingParams samplingParams, LoraRequest? loraRequest, string? requestId, string? cacheSalt,
        CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        return Generate(requestId, id => Engine.Process(id, prompt, null, samplingParams, loraRequest, cacheSalt), cancellationToken);
    }

    /// <summary>Streams the outputs of one request given as token ids, with vLLM's cache_salt.</summary>
    public IAsyncEnumerable<RequestOutput> GenerateAsync(IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest, string? requestId,
        string? cacheSalt, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(promptTokenIds);
        return Generate(requestId, id => Engine.Process(id, null, promptTokenIds, samplingParams, loraRequest, cacheSalt), cancellationToken);
    }

    /// <summary>Processes the request now (so a bad one throws here, before anything is queued) and queues it for the loop.</summary>
    IAsyncEnumerable<RequestOutput> Generate(string? requestId, Func<string, EngineCoreRequest> process, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        string id = requestId ?? $"req-{Interlocked.Increment(ref _nextId)}";
        var stream = Channel.CreateUnbounded<RequestOutput>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        if (!_streams.TryAdd(id, stream)) throw new ArgumentException($"request id '{id}' is already running", nameof(requestId));
        try
        {
            // Checked after the stream is listed: AbortAll marks the engine closed before it ends the listed streams,
            // so a request either sees the mark here or is among the streams it ends.
            if (_closed is { } reason) throw new EngineDeadException(reason);
            if (!_intake.Writer.TryWrite(new Add(process(id), stream))) throw new ObjectDisposedException(nameof(AsyncLlmEngine));
        }
        catch
        {
            _streams.TryRemove(KeyValuePair.Create(id, stream));
            throw;
        }
        return Read(id, stream, cancellationToken);
    }

    async IAsyncEnumerable<RequestOutput> Read(string id, Channel<RequestOutput> stream, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        bool finished = false;
        try
        {
            await foreach (var output in stream.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                finished = output.Finished;
                yield return output;
                if (finished) yield break;
            }
        }
        finally
        {
            if (_streams.TryRemove(KeyValuePair.Create(id, stream)) && !finished) _intake.Writer.TryWrite(new Cancel(id));
        }
    }

    /// <summary>Aborts a running request (its stream ends). Returns at once; the engine frees it before its next step.</summary>
    public void Abort(string requestId)
    {
        if (_streams.TryRemove(requestId, out var stream)) stream.Writer.TryComplete();
        _intake.Writer.TryWrite(new Cancel(requestId));
    }

    /// <summary>
    /// Refuses new requests from now on and ends every open stream with <see cref="EngineDeadException"/> carrying
    /// <paramref name="reason"/> (a server's shutdown once its drain time is over); their requests are aborted.
    /// </summary>
    public void AbortAll(string reason)
    {
        _closed = reason;
        foreach (var (id, stream) in _streams)
        {
            if (!_streams.TryRemove(KeyValuePair.Create(id, stream))) continue;
            stream.Writer.TryComplete(new EngineDeadException(reason));
            _intake.Writer.TryWrite(new Cancel(id));
        }
    }

    void RunLoop()
    {
        var intake = _intake.Reader;
        while (true)
        {
            while (intake.TryRead(out var command)) Apply(command);
            if (_stop.IsCancellationRequested) return;
            if (!Engine.HasUnfinishedRequests)
            {
                try
                {
                    if (!intake.WaitToReadAsync(_stop.Token).AsTask().GetAwaiter().GetResult()) return;
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            Route(Engine.Step());
        }
    }

    void Apply(Command command)
    {
        switch (command)
        {
            case Add add:
                try
                {
                    Engine.Core.Add(add.Request);
                }
                catch (Exception e) when (e is ArgumentException or EngineDeadException)
                {
                    _streams.TryRemove(KeyValuePair.Create(add.Request.RequestId, add.Stream));
                    add.Stream.Writer.TryComplete(e);
                }
                break;
            case Cancel cancel:
                Engine.AbortRequest(cancel.RequestId);
                break;
        }
    }

    void Route(IReadOnlyList<RequestOutput> outputs)
    {
        foreach (var output in outputs)
        {
            if (!_streams.TryGetValue(output.RequestId, out var stream)) continue;
            if (output.Error is { } error)
            {
                _streams.TryRemove(KeyValuePair.Create(output.RequestId, stream));
                stream.Writer.TryComplete(Engine.Errored ? new EngineDeadException(error, Engine.Core.DeadCause) : new EngineGenerateException(output.RequestId, error));
                continue;
            }
            stream.Writer.TryWrite(output);
            if (!output.Finished) continue;
            _streams.TryRemove(KeyValuePair.Create(output.RequestId, stream));
            stream.Writer.TryComplete();
        }
    }

    /// <summary>Stops the step loop, ends every open stream with <see cref="EngineDeadException"/> and disposes the engine. Idempotent.</summary>
    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _intake.Writer.TryComplete();
        _loop.Join();
        AbortAll("The engine was shut down.");
        Engine.Dispose();
        _stop.Dispose();
    }
}
