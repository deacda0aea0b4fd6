using System.Text.Json;
using LoraEngine.Models.Safetensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests.Llama;

/// <summary>Reading the golden files: prompt ids, prompt counts, and per-position logits comparison.</summary>
internal static class GoldenFiles
{
    internal static int[] PromptIds(SafetensorsFile golden, int i) => golden.ReadInt64($"prompt{i}.ids").Select(v => (int)v).ToArray();

    internal static int PromptCount(string goldenJson) =>
        JsonDocument.Parse(File.ReadAllText(Fixtures.Golden(goldenJson))).RootElement.GetProperty("prompts").GetArrayLength();

    internal static void AssertLogitsMatch(float[] logits, float[] golden, int vocab, double limit, string what)
    {
        Assert.Equal(golden.Length, logits.Length);
        for (int p = 0; p < golden.Length / vocab; p++)
            Tolerance.AssertRelative(logits.AsSpan(p * vocab, vocab), golden.AsSpan(p * vocab, vocab), limit, $"{what} position {p}");
    }
}
