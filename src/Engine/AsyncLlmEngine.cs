using System.Collections.Concurrent;
using System.Runtime.CompilerServices;
using System.Threading.Channels;

namespace LoraEngine;

/// <summary>
/// The engine behind an async API: one background loop calls <see cref="LlmEngine.Step"/> while any request is
/// unfinished and routes each <see cref="RequestOutput"/> to its request's stream. Cancelling a stream's token
/// (a client that disconnects) aborts the request, which frees its KV blocks and adapter pin at once.
/// </summary>
public sealed class AsyncLlmEngine : IDisposable
{
    readonly ConcurrentDictionary<string, Channel<RequestOutput>> _streams = new();
    readonly SemaphoreSlim _work = new(0);
    readonly CancellationTokenSource _stop = new();
    readonly Thread _loop;
    long _nextId;

    public AsyncLlmEngine(LlmEngine engine)
    {
        Engine = engine ?? throw new ArgumentNullException(nameof(engine));
        _loop = new Thread(RunLoop) { IsBackground = true, Name = "LoraEngine step loop" };
        _loop.Start();
    }

    public static AsyncLlmEngine FromEngineArgs(EngineArgs engineArgs, IReadOnlyList<IStatLoggerFactory>? statLoggers = null) =>
        new(LlmEngine.FromEngineArgs(engineArgs, UsageContext.OpenAiApiServer, statLoggers));

    public LlmEngine Engine { get; }

    /// <summary>True while the step loop runs: false once disposed (or if the loop thread ever died).</summary>
    public bool IsRunning => !_stop.IsCancellationRequested && _loop.IsAlive;

    /// <summary>Streams the outputs of one request (each a cumulative snapshot, the last with Finished = true).</summary>
    public IAsyncEnumerable<RequestOutput> GenerateAsync(string prompt, SamplingParams samplingParams, LoraRequest? loraRequest = null,
        string? requestId = null, CancellationToken cancellationToken = default) =>
        Generate(requestId, id => Engine.AddRequest(id, prompt, samplingParams, loraRequest), cancellationToken);

    /// <summary>Streams the outputs of one request given as token ids.</summary>
    public IAsyncEnumerable<RequestOutput> GenerateAsync(IReadOnlyList<int> promptTokenIds, SamplingParams samplingParams, LoraRequest? loraRequest = null,
        string? requestId = null, CancellationToken cancellationToken = default) =>
        Generate(requestId, id => Engine.AddRequest(id, promptTokenIds, samplingParams, loraRequest), cancellationToken);

    IAsyncEnumerable<RequestOutput> Generate(string? requestId, Action<string> add, CancellationToken cancellationToken)
    {
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        string id = requestId ?? $"req-{Interlocked.Increment(ref _nextId)}";
        var channel = Channel.CreateUnbounded<RequestOutput>(new UnboundedChannelOptions { SingleReader = true, SingleWriter = true });
        if (!_streams.TryAdd(id, channel)) throw new ArgumentException($"request id '{id}' is already running", nameof(requestId));
        try
        {
            add(id); // throws at once for bad arguments or adapters; nothing is queued then
        }
        catch
        {
            _streams.TryRemove(id, out _);
            throw;
        }
        _work.Release();
        return Read(id, channel, cancellationToken);
    }

    async IAsyncEnumerable<RequestOutput> Read(string id, Channel<RequestOutput> channel, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        bool finished = false;
        try
        {
            await foreach (var output in channel.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
            {
                finished = output.Finished;
                yield return output;
                if (finished) yield break;
            }
        }
        finally
        {
            _streams.TryRemove(id, out _);
            if (!finished) Engine.AbortRequest(id);
        }
    }

    /// <summary>Aborts a running request (its stream ends).</summary>
    public void Abort(string requestId)
    {
        Engine.AbortRequest(requestId);
        if (_streams.TryRemove(requestId, out var channel)) channel.Writer.TryComplete();
    }

    void RunLoop()
    {
        var token = _stop.Token;
        while (!token.IsCancellationRequested)
        {
            if (!Engine.HasUnfinishedRequests)
            {
                try
                {
                    _work.Wait(token);
                }
                catch (OperationCanceledException)
                {
                    return;
                }
                continue;
            }
            IReadOnlyList<RequestOutput> outputs;
            try
            {
                outputs = Engine.Step();
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                // A failed step must not kill the loop: fail the running streams, keep serving new requests.
                foreach (var (id, channel) in _streams)
                {
                    Engine.AbortRequest(id);
                    channel.Writer.TryComplete(e);
                }
                continue;
            }
            foreach (var output in outputs)
            {
                if (!_streams.TryGetValue(output.RequestId, out var channel)) continue;
                channel.Writer.TryWrite(output);
                if (output.Finished) channel.Writer.TryComplete();
            }
        }
    }

    public void Dispose()
    {
        if (_stop.IsCancellationRequested) return;
        _stop.Cancel();
        _loop.Join();
        foreach (var channel in _streams.Values) channel.Writer.TryComplete();
        Engine.Dispose();
        _stop.Dispose();
        _work.Dispose();
    }
}
