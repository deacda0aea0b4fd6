using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;

namespace LoraEngine.Server.Tests;

/// <summary>Adapters made in temp folders: copies of the fixtures, and hostile ones.</summary>
internal static class TestAdapters
{
    /// <summary>Copies a fixture adapter's files into <paramref name="to"/> (overwriting: new weights for an in-place reload).</summary>
    public static string Copy(string fixture, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(Fixtures.Adapter(fixture))) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), overwrite: true);
        return to;
    }

    /// <summary>
    /// An adapter that passes every load check (finite weights, right shapes) but whose delta overflows: every logit of
    /// its requests turns NaN. Targets q_proj and v_proj of layer 0 of the vim-tiny shape.
    /// </summary>
    public static string Diverging(string to, float value = 1e30f)
    {
        Directory.CreateDirectory(to);
        File.WriteAllText(Path.Combine(to, "adapter_config.json"), """{"r": 4, "lora_alpha": 4, "target_modules": ["q_proj", "v_proj"], "peft_type": "LORA"}""");
        float[] Fill(int n) => Enumerable.Repeat(value, n).ToArray();
        SafetensorsWriter.Write(Path.Combine(to, "adapter_model.safetensors"),
        [
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", Fill(4 * 256), DType.F32, 4, 256),
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", Fill(256 * 4), DType.F32, 256, 4),
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", Fill(4 * 256), DType.F32, 4, 256),
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", Fill(128 * 4), DType.F32, 128, 4),
        ]);
        return to;
    }
}
