namespace LoraEngine.Execution;

/// <summary>
/// What the engine core needs of the model runner: run one step on the device. The runner owns all device state
/// (weights, KV cache, step buffers, LoRA slot activation); an exception from it is a device-level failure.
/// </summary>
internal interface IModelRunner : IDisposable
{
    IReadOnlyList<ExecutionResult> Execute(IReadOnlyList<ExecutionItem> items);

    /// <summary>
    /// Host time spent waiting for the device to finish the steps' work and return their sampled results, summed over
    /// every step so far: the rest of a step's time is the host's (scheduling, packing, launching, updating).
    /// </summary>
    TimeSpan DeviceWait { get; }
}
