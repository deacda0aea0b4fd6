namespace LoraEngine;

/// <summary>Who created the engine (as vLLM's UsageContext): changes defaults only where vLLM's does.</summary>
public enum UsageContext
{
    /// <summary>An engine built directly (<see cref="LlmEngine.FromEngineArgs"/>'s default).</summary>
    EngineContext,
    /// <summary>The offline <see cref="Llm"/> class: a larger default step budget (8192 tokens), as vLLM's.</summary>
    LlmClass,
    /// <summary>The OpenAI-compatible server (<see cref="AsyncLlmEngine.FromEngineArgs"/>).</summary>
    OpenAiApiServer,
}
