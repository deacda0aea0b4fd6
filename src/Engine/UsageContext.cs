namespace LoraEngine;

/// <summary>Who created the engine (as vLLM's UsageContext): changes defaults only where vLLM's does.</summary>
public enum UsageContext
{
    EngineContext,
    LlmClass,
    OpenAiApiServer,
}
