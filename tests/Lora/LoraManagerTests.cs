using LoraEngine.Lora;
using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Lora.Tests;

/// <summary>
/// The CPU cache and the per-step slot activation on the fixture model: new copies reach their slot, confinement is
/// checked again at every reload, a refused reload changes nothing.
/// </summary>
public sealed class LoraManagerTests : IDisposable
{
    readonly LlamaModel _model = LlamaModel.Load(TestDevices.CpuFast, Fixtures.Model("vim-tiny"));
    readonly LoraLayers _layers;
    readonly LoraManager _manager;
    readonly string _root = Directory.CreateTempSubdirectory("loraengine-manager-").FullName;

    public LoraManagerTests()
    {
        _layers = LoraLayers.Wrap(_model, maxSlots: 2, maxRank: 16, DType.F32, maxTokens: 16);
        _manager = new LoraManager(_layers, _model.Config, maxCpuLoras: 2);
    }

    public void Dispose()
    {
        _layers.Dispose();
        _model.Dispose();
        Directory.Delete(_root, recursive: true);
    }

    static void CopyAdapter(string name, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(Fixtures.Adapter(name))) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), overwrite: true);
    }

    /// <summary>The A rows of the slot's q_proj of layer 0, as the device holds them: [maxRank, in].</summary>
    float[] SlotA(int slot)
    {
        var a = _layers.Layers[(0, LoraModule.QProj)].A;
        return a.Slice(slot, 1).ToArray<float>();
    }

    static float[] Padded(LoraAdapter adapter, int maxRank)
    {
        var w = adapter.Weights.Single(w => w.Layer == 0 && w.Module == LoraModule.QProj);
        var padded = new float[maxRank * (w.A.Length / w.Rank)];
        w.A.CopyTo(padded, 0);
        return padded;
    }

    [Fact]
    public void A_step_places_its_adapters_and_an_in_place_reload_reaches_the_slot_before_the_next_step()
    {
        string dir = Path.Combine(_root, "a");
        CopyAdapter("vim-upper", dir);
        var upper = _manager.Load("a", 1, dir);
        var rot13 = _manager.Load("b", 2, Fixtures.Adapter("vim-rot13"));
        var slots = _manager.ActivateForStep([upper, rot13]);
        Assert.NotEqual(slots[upper], slots[rot13]);
        Assert.Equal(Padded(upper, 16), SlotA(slots[upper]));
        Assert.Equal(Padded(rot13, 16), SlotA(slots[rot13]));

        CopyAdapter("vim-random-qv-r4", dir); // new weights on disk, then load_inplace
        var reloaded = _manager.Load("a", 1, dir, loraRoot: null, replace: true);
        Assert.NotSame(upper, reloaded);
        Assert.Same(reloaded, _manager.Load("a", 1, dir));
        int slot = _manager.ActivateForStep([reloaded])[reloaded];
        Assert.Equal(Padded(reloaded, 16), SlotA(slot));
        Assert.Throws<ArgumentException>(() => _manager.ActivateForStep([upper, rot13, reloaded])); // more than the slots
    }

    [Fact]
    public void A_reload_after_eviction_checks_the_root_again_and_a_link_repointed_outside_is_refused()
    {
        string outside = Directory.CreateTempSubdirectory("loraengine-outside-").FullName;
        try
        {
            CopyAdapter("vim-upper", Path.Combine(_root, "real"));
            CopyAdapter("vim-rot13", outside);
            string link = Path.Combine(_root, "link");
            Directory.CreateSymbolicLink(link, Path.Combine(_root, "real"));
            Assert.NotNull(_manager.Load("v", 7, link, _root, replace: false));
            // Repoint the link outside, push the adapter out of the CPU cache, ask for it again.
            Directory.Delete(link);
            Directory.CreateSymbolicLink(link, outside);
            _manager.Load("x", 8, Fixtures.Adapter("vim-upper"));
            _manager.Load("y", 9, Fixtures.Adapter("vim-rot13"));
            Assert.False(_manager.IsLoaded(7));
            var e = Assert.Throws<LoraException>(() => _manager.Load("v", 7, link, _root, replace: false));
            Assert.Contains("leads outside the LoRA root", e.Message);
            Assert.False(_manager.IsLoaded(7));
        }
        finally
        {
            Directory.Delete(outside, recursive: true);
        }
    }

    [Fact]
    public void A_refused_in_place_reload_keeps_the_loaded_copy_and_callers_together_share_one_read()
    {
        string dir = Path.Combine(_root, "c");
        CopyAdapter("vim-upper", dir);
        var first = _manager.Load("c", 3, dir);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), "{");
        Assert.Throws<LoraException>(() => _manager.Load("c", 3, dir, null, replace: true));
        Assert.Same(first, _manager.Load("c", 3, dir));

        _manager.Remove(3);
        CopyAdapter("vim-upper", dir);
        var copies = Enumerable.Range(0, 8).AsParallel().WithDegreeOfParallelism(8).Select(_ => _manager.Load("c", 3, dir)).ToArray();
        Assert.All(copies, c => Assert.Same(copies[0], c));
    }

    [Fact]
    public void Float16_slots_refuse_an_adapter_whose_scaled_weights_they_cannot_hold()
    {
        // lora_alpha 1e7 at rank 8: scale·B is finite as a float but far past float16's 65504.
        string dir = Path.Combine(_root, "loud");
        CopyAdapter("vim-upper", dir);
        string config = Path.Combine(dir, "adapter_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"lora_alpha\": 16", "\"lora_alpha\": 10000000"));
        using var f16 = LoraLayers.Wrap(_model, maxSlots: 2, maxRank: 16, DType.F16, maxTokens: 16);
        var e = Assert.Throws<LoraException>(() => new LoraManager(f16, _model.Config, maxCpuLoras: 2).Load("loud", 1, dir));
        Assert.Contains("float16 LoRA slots", e.Message);
        Assert.Contains("'loud'", e.Message);
        _manager.Load("loud", 1, dir); // F32 slots hold it
    }
}
