namespace LoraEngine;

/// <summary>
/// The engine failed one request while generating (vLLM's EngineGenerateError): the request ended with an error;
/// other requests go on. The message is meant for the client.
/// </summary>
public sealed class EngineGenerateException(string requestId, string message) : Exception(message)
{
    /// <summary>The id of the failed request.</summary>
    public string RequestId { get; } = requestId;
}

/// <summary>
/// The engine stopped (vLLM's EngineDeadError): a step failed on the device, or the engine is shutting down. Every
/// unfinished request ended with this error and no new one is accepted.
/// </summary>
public sealed class EngineDeadException(string message, Exception? inner = null) : Exception(message, inner);
