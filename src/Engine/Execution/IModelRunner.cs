namespace LoraEngine.Execution;

/// <summary>
/// What the engine core needs of the model runner: run one step on the device. The runner owns all device state
/// (weights, KV cache, step buffers, LoRA slot activation); an exception from it is a device-level failure.
/// </summary>
internal interface IModelRunner : IDisposable
{
    IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items);
}
