using System.Buffers;

namespace LoraEngine.Lora;

/// <summary>The one exception for a refused LoRA adapter; the message names the adapter, its path and the fault.</summary>
public sealed class LoraException : Exception
{
    /// <summary>A refusal of adapter <paramref name="adapterName"/> at <paramref name="adapterPath"/> because of <paramref name="fault"/>.</summary>
    /// <param name="adapterName">the adapter's name (lora_name)</param>
    /// <param name="adapterPath">the adapter folder as given</param>
    /// <param name="fault">what was wrong; never content of the adapter's files beyond names (<see cref="Quote"/>)</param>
    /// <param name="inner">the exception that revealed the fault, if any</param>
    public LoraException(string adapterName, string adapterPath, string fault, Exception? inner = null)
        : base($"LoRA adapter '{adapterName}' ({adapterPath}): {fault}", inner)
    {
        AdapterName = adapterName;
        AdapterPath = adapterPath;
        Fault = fault;
    }

    /// <summary>The refused adapter's name.</summary>
    public string AdapterName { get; }

    /// <summary>The refused adapter's folder, as given.</summary>
    public string AdapterPath { get; }

    /// <summary>What was wrong, without the adapter's name.</summary>
    public string Fault { get; }

    static readonly SearchValues<char> s_nameChars = SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");

    /// <summary>
    /// A value read from an adapter's files, as an error message may show it: quoted when it looks like a name
    /// (tensor, module, dtype: letters, digits, '_', '.', '-', at most 128 characters), otherwise only described,
    /// so no other content of a file ever reaches a message.
    /// </summary>
    public static string Quote(string? valueFromFile) =>
        valueFromFile is { Length: > 0 and <= 128 } v && !v.AsSpan().ContainsAnyExcept(s_nameChars)
            ? $"'{v}'"
            : $"(a value of {valueFromFile?.Length ?? 0} characters, not shown)";
}
