namespace LoraEngine.Lora;

/// <summary>The one exception for a refused LoRA adapter; the message names the adapter, its path and the fault.</summary>
public sealed class LoraException : Exception
{
    public LoraException(string adapterName, string adapterPath, string fault, Exception? inner = null)
        : base($"LoRA adapter '{adapterName}' ({adapterPath}): {fault}", inner)
    {
        AdapterName = adapterName;
        AdapterPath = adapterPath;
        Fault = fault;
    }

    public string AdapterName { get; }

    public string AdapterPath { get; }

    /// <summary>What was wrong, without the adapter's name.</summary>
    public string Fault { get; }
}
