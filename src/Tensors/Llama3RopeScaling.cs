namespace LoraEngine.Tensors;

/// <summary>
/// Llama 3's RoPE frequency scaling (config <c>rope_type: "llama3"</c>): long wavelengths are divided by
/// <see cref="Factor"/>, short ones kept, and the band between smoothly interpolated.
/// </summary>
public sealed record Llama3RopeScaling(double Factor, double LowFreqFactor, double HighFreqFactor, int OriginalMaxPositionEmbeddings);
