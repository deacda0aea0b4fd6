using LoraEngine.Lora;
using LoraEngine.Models;
using LoraEngine.Models.Safetensors;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Lora.Tests;

/// <summary>The fixture adapters load with the right ranks and scales; every refusal has a hand-made bad adapter.</summary>
public sealed class LoraAdapterTests : IDisposable
{
    static readonly Lazy<LlamaConfig> s_model = new(() => LlamaConfig.Load(Fixtures.Model("vim-tiny")));
    readonly string _dir = Path.Combine(Path.GetTempPath(), "loraengine-adapter-" + Guid.NewGuid().ToString("N"));

    public LoraAdapterTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData("vim-upper", 8, 2.0, 7)]
    [InlineData("vim-rot13", 16, 8.0, 7)]          // rsLoRA: 32 / sqrt(16)
    [InlineData("vim-random-qv-r4", 4, 2.0, 2)]
    public void Fixture_adapters_load_with_their_rank_and_scale(string name, int rank, double scale, int modules)
    {
        var adapter = LoraAdapter.Load(name, Fixtures.Adapter(name), s_model.Value, 16);
        Assert.Equal(rank, adapter.MaxRank);
        Assert.All(adapter.Weights, w => Assert.Equal(scale, w.Scale, 6));
        Assert.Equal(modules, adapter.TargetModules.Count);
        Assert.Equal(modules * 6, adapter.Weights.Count);
    }

    /// <summary>Writes an adapter for the vim-tiny shape: q_proj and v_proj of layer 0 unless told otherwise.</summary>
    string Write(string config, Action<List<(string, string, long[], byte[])>>? edit = null, int rank = 4)
    {
        string path = Path.Combine(_dir, Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(path);
        File.WriteAllText(Path.Combine(path, "adapter_config.json"), config);
        var rnd = new RandomData(1);
        var tensors = new List<(string, string, long[], byte[])>
        {
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", rnd.Floats(rank * 256), DType.F32, rank, 256),
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", rnd.Floats(256 * rank), DType.F32, 256, rank),
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_A.weight", rnd.Floats(rank * 256), DType.BF16, rank, 256),
            SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight", rnd.Floats(128 * rank), DType.BF16, 128, rank),
        };
        edit?.Invoke(tensors);
        SafetensorsWriter.Write(Path.Combine(path, "adapter_model.safetensors"), tensors);
        return path;
    }

    const string Good = """{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "bias": "none", "peft_type": "LORA"}""";

    LoraException Refused(string path, int maxRank = 16) => Assert.Throws<LoraException>(() => LoraAdapter.Load("bad", path, s_model.Value, maxRank));

    [Fact]
    public void The_content_hash_follows_the_weights_and_scales_not_the_name_path_or_read()
    {
        UInt128 Hash(string path, string name = "a") => LoraAdapter.Load(name, path, s_model.Value, 16).ContentHash;
        string one = Write(Good);
        Assert.Equal(Hash(one), Hash(one, name: "renamed"));         // a second read, another name
        Assert.Equal(Hash(one), Hash(Write(Good)));                  // another folder, the same bytes
        var changed = Write(Good, t =>
        {
            var values = new RandomData(1).Floats(4 * 256);
            values[17] += 1e-3f;                                     // one weight of q_proj's A
            t[0] = SafetensorsWriter.Tensor(t[0].Item1, values, DType.F32, 4, 256);
        });
        Assert.NotEqual(Hash(one), Hash(changed));
        Assert.NotEqual(Hash(one), Hash(Write(Good.Replace("\"lora_alpha\": 8", "\"lora_alpha\": 16")))); // another scale
        Assert.NotEqual(Hash(Fixtures.Adapter("vim-upper")), Hash(Fixtures.Adapter("vim-rot13")));
    }

    [Fact]
    public void A_hand_made_adapter_loads_with_mixed_dtypes()
    {
        var adapter = LoraAdapter.Load("good", Write(Good), s_model.Value, 16);
        Assert.Equal(2, adapter.Weights.Count);
        Assert.Equal(2.0f, adapter.Weights[0].Scale);
    }

    [Theory]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "use_dora": true}""", "DoRA")]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "bias": "all"}""", "Adapter bias is not supported.")]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["lm_head"]}""", "modules_to_save")]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "lm_head"]}""", "lm_head")]
    [InlineData("""{"lora_alpha": 8, "target_modules": ["q_proj"]}""", "Missing required configuration fields: r")]
    [InlineData("""{"r": "four", "lora_alpha": 8, "target_modules": ["q_proj"]}""", "wrong type")]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], """, "not valid JSON")]
    [InlineData("""{"r": 0, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}""", "positive integer")]
    [InlineData("""{"r": 4, "r": 8, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}""", "adapter_config.json names a field twice")]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "rank_pattern": {"q_proj": 2, "q_proj": 4}}""", "field 'rank_pattern' names a key twice")]
    [InlineData("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"]}""", "target_modules does not include")]
    public void Bad_configs_are_refused_naming_the_adapter_and_fault(string config, string fault)
    {
        var e = Refused(Write(config));
        Assert.Contains("'bad'", e.Message);
        Assert.Contains(fault, e.Message);
    }

    [Fact]
    public void Rank_above_the_engine_maximum_is_refused_with_vllms_text()
    {
        var e = Refused(Write(Good), maxRank: 1);
        Assert.Contains("LoRA rank 4 is greater than max_lora_rank 1.", e.Message);
    }

    [Fact]
    public void Weight_faults_are_refused()
    {
        Assert.Contains("no matching lora_A", Refused(Write(Good, t => t.RemoveAt(0))).Message);
        Assert.Contains("no matching lora_B", Refused(Write(Good, t => t.RemoveAt(3))).Message);
        Assert.Contains("expected [4, 256]", Refused(Write(Good, t => t[0] = SafetensorsWriter.Tensor(t[0].Item1, new float[4 * 255], DType.F32, 4, 255))).Message);
        Assert.Contains("layer 9", Refused(Write(Good, t => t.Add(SafetensorsWriter.Tensor("base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight", new float[4 * 256], DType.F32, 4, 256)))).Message);
        Assert.Contains("unsupported LoRA weight", Refused(Write(Good, t => t.Add(SafetensorsWriter.Tensor("base_model.model.lm_head.lora_A.weight", new float[4], DType.F32, 4)))).Message);
        Assert.Contains("unsupported LoRA weight", Refused(Write(Good, t => t.Add(SafetensorsWriter.Tensor("base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector", new float[4], DType.F32, 4)))).Message);
    }

    [Fact]
    public void Missing_bin_only_and_truncated_files_are_refused()
    {
        Assert.Contains("No adapter found", Refused(Path.Combine(_dir, "nothing-here")).Message);
        string binOnly = Write(Good);
        File.Delete(Path.Combine(binOnly, "adapter_model.safetensors"));
        File.WriteAllBytes(Path.Combine(binOnly, "adapter_model.bin"), [1, 2, 3]);
        Assert.Contains("adapter_model.bin", Refused(binOnly).Message);
        string truncated = Write(Good);
        string file = Path.Combine(truncated, "adapter_model.safetensors");
        File.WriteAllBytes(file, File.ReadAllBytes(file)[..100]);
        Assert.Contains("malformed adapter_model.safetensors", Refused(truncated).Message);
    }

    [Fact]
    public void Layers_pattern_names_the_layer_list_layers_to_transform_indexes_as_in_peft()
    {
        // "layers" (a Llama's list, and PEFT's default) finds the index; "h" finds none, so nothing is targeted.
        var layers = LoraAdapter.Load("lp", Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0], "layers_pattern": "layers"}"""), s_model.Value, 16);
        Assert.Equal(2, layers.Weights.Count);
        Assert.Contains("layers_pattern does not name its layer list",
            Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [0], "layers_pattern": ["h"]}""")).Message);
        Assert.Contains("layers_to_transform does not include",
            Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": []}""")).Message);
    }

    [Fact]
    public void Regex_targets_rank_and_alpha_patterns_and_layers_to_transform()
    {
        var regex = LoraAdapter.Load("re", Write("""{"r": 4, "lora_alpha": 8, "target_modules": "model\\.layers\\.0\\.self_attn\\.(q|v)_proj"}"""), s_model.Value, 16);
        Assert.Equal(2, regex.Weights.Count);
        var patterns = LoraAdapter.Load("pat", Write("""{"r": 8, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "rank_pattern": {"q_proj": 4, "v_proj": 4}, "alpha_pattern": {"v_proj": 16}}"""), s_model.Value, 16);
        Assert.Equal(4.0f, patterns.Weights.Single(w => w.Module == LoraModule.VProj).Scale); // rank 4 (rank_pattern), alpha 16 (alpha_pattern)
        Assert.Equal(2.0f, patterns.Weights.Single(w => w.Module == LoraModule.QProj).Scale); // rank 4 (rank_pattern), alpha 8
        Assert.All(patterns.Weights, w => Assert.Equal(4, w.Rank));
        Assert.Contains("layers_to_transform does not include",
            Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "layers_to_transform": [1]}""")).Message);
    }

    [Fact]
    public void Rank_and_alpha_pattern_keys_match_whole_dotted_name_parts_as_peft_does()
    {
        // PEFT's get_pattern_key: re.match(rf"(.*\.)?({key})$", name), anchored at the name's start, so a key matches
        // whole dotted parts at the end: "proj" matches no model.layers.0.self_attn.q_proj, "0.self_attn.q_proj" matches
        // layer 0's and not layer 10's.
        var adapter = LoraAdapter.Load("pat", Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "alpha_pattern": {"proj": 64}, "rank_pattern": {"_proj": 2}}"""), s_model.Value, 16);
        Assert.All(adapter.Weights, w => Assert.Equal(2.0f, w.Scale)); // alpha 8 / r 4: neither pattern applies
        var config = LoraAdapterConfig.Parse("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj"], "alpha_pattern": {"0.self_attn.q_proj": 64}}""");
        Assert.Equal(64, config.RankAndAlpha("model.layers.0.self_attn.q_proj").Alpha);
        Assert.Equal(8, config.RankAndAlpha("model.layers.10.self_attn.q_proj").Alpha);
    }

    [Theory]
    [InlineData("\"alora_invocation_tokens\": [5, 6]", "alora_invocation_tokens")]
    [InlineData("\"layer_replication\": [[0, 4], [2, 6]]", "layer_replication")]
    [InlineData("\"use_qalora\": true", "use_qalora")]
    [InlineData("\"arrow_config\": {\"top_k\": 2}", "arrow_config")]
    public void Peft_fields_that_change_the_computation_and_are_not_implemented_are_refused(string field, string name)
    {
        var e = Refused(Write($$"""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], {{field}}}"""));
        Assert.Contains($"{name} ", e.Message);
        Assert.Contains("not supported", e.Message);
        // Their neutral values load.
        LoraAdapter.Load("ok", Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "alora_invocation_tokens": null, "layer_replication": null, "use_qalora": false, "arrow_config": null}"""), s_model.Value, 16);
    }

    [Fact]
    public void Exclude_modules_removes_modules_from_the_targets_as_peft_does()
    {
        Assert.Contains("exclude_modules", Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "exclude_modules": ["v_proj"]}""")).Message);
        Assert.Contains("exclude_modules", Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "exclude_modules": ".*\\.v_proj"}""")).Message);
        var config = LoraAdapterConfig.Parse("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "exclude_modules": ["layers.1.self_attn.v_proj"]}""");
        Assert.False(config.Targets("model.layers.1.self_attn.v_proj", 1));
        Assert.True(config.Targets("model.layers.11.self_attn.v_proj", 11));
        Assert.Equal(2, LoraAdapter.Load("ok", Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "exclude_modules": ["k_proj"]}"""), s_model.Value, 16).Weights.Count);
    }

    [Theory]
    [InlineData(float.NaN, "a NaN")]
    [InlineData(float.PositiveInfinity, "an infinity")]
    [InlineData(float.NegativeInfinity, "an infinity")]
    public void Non_finite_weights_are_refused_naming_the_tensor(float bad, string what)
    {
        var values = new float[4 * 256];
        values[77] = bad;
        var e = Refused(Write(Good, t => t[0] = SafetensorsWriter.Tensor(t[0].Item1, values, DType.F32, 4, 256)));
        Assert.Contains($"tensor 'base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight' holds {what} at index 77", e.Message);
    }

    [Fact]
    public void A_B_weight_that_overflows_once_scaled_is_refused()
    {
        var values = new float[256 * 4];
        values[3] = 3e38f; // finite, but scale 2 (alpha 8 / r 4) takes it past float.MaxValue
        var e = Refused(Write(Good, t => t[1] = SafetensorsWriter.Tensor(t[1].Item1, values, DType.F32, 256, 4)));
        Assert.Contains("overflows when scaled by 2", e.Message);
    }

    [Fact]
    public void A_scale_past_float_range_or_a_bad_alpha_pattern_is_refused_even_with_zero_B()
    {
        // A freshly initialised PEFT adapter has B = 0, so the overflow check on scale·B passes; the scale itself,
        // infinite as a float, would turn the slot's B into 0·∞ = NaN.
        void ZeroB(List<(string, string, long[], byte[])> t)
        {
            t[1] = SafetensorsWriter.Tensor(t[1].Item1, new float[256 * 4], DType.F32, 256, 4);
            t[3] = SafetensorsWriter.Tensor(t[3].Item1, new float[128 * 4], DType.BF16, 128, 4);
        }
        Assert.Contains("scale", Refused(Write("""{"r": 4, "lora_alpha": 1e308, "target_modules": ["q_proj", "v_proj"]}""", ZeroB)).Message);
        Assert.Contains("alpha_pattern", Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "alpha_pattern": {"q_proj": 1e300}}""", ZeroB)).Message);
        Assert.Contains("lora_alpha 0 of alpha_pattern 'q_proj' must be positive",
            Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "alpha_pattern": {"q_proj": 0}}""")).Message);
        Assert.Contains("lora_alpha -8 of alpha_pattern 'q_proj' must be positive",
            Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "alpha_pattern": {"q_proj": -8}}""")).Message);
    }

    [Fact]
    public void Messages_never_quote_file_content()
    {
        // A config that is not JSON: the parser's own message would quote the offending character.
        var e = Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": hunter2}"""));
        Assert.Contains("not valid JSON (line 1, byte 45)", e.Message);
        Assert.DoesNotContain("'h'", e.Message);
        Assert.DoesNotContain("hunter2", e.Message);
        // A field of the wrong type is named, its value is not shown.
        e = Refused(Write("""{"r": "hunter2", "lora_alpha": 8, "target_modules": ["q_proj"]}"""));
        Assert.Contains("field 'r' has the wrong type", e.Message);
        Assert.DoesNotContain("hunter2", e.Message);
        // Values that do not look like names (a line of /etc/passwd, say) are described, not shown.
        e = Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "root:x:0:0:root:/root:/bin/bash"]}"""));
        Assert.Contains("(a value of 31 characters, not shown)", e.Message);
        Assert.DoesNotContain("/bin/bash", e.Message);
        e = Refused(Write(Good, t => t.Add(SafetensorsWriter.Tensor("root:x:0:0:root:/root:/bin/bash", new float[4], DType.F32, 4))));
        Assert.DoesNotContain("/bin/bash", e.Message);
        // A safetensors header that is not JSON.
        string dir = Write(Good);
        var header = "{\"hunter2\": secret}"u8.ToArray();
        File.WriteAllBytes(Path.Combine(dir, "adapter_model.safetensors"), [.. BitConverter.GetBytes((ulong)header.Length), .. header]);
        e = Refused(dir);
        Assert.Contains("malformed adapter_model.safetensors: the header is not valid JSON (line 1, byte 13)", e.Message);
        Assert.DoesNotContain("secret", e.Message);
        Assert.DoesNotContain("'s'", e.Message);
        // A bad regex in target_modules: .NET's message would quote the pattern.
        e = Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": "(hunter2"}"""));
        Assert.Contains("target_modules is not a valid regular expression", e.Message);
        Assert.DoesNotContain("hunter2", e.Message);
    }

    [Fact]
    public void A_regex_that_backtracks_for_ever_is_stopped()
    {
        // Exponential backtracking on every module name: seconds per name without the match timeout.
        var e = Refused(Write("""{"r": 4, "lora_alpha": 8, "target_modules": "((([a-z_.0-9])+)+.)+[A-Z]([a-z])+"}"""));
        Assert.Contains("ran longer than", e.Message);
    }

    [Fact]
    public void A_config_file_too_large_to_be_one_is_refused_before_it_is_read()
    {
        string dir = Write(Good);
        File.WriteAllText(Path.Combine(dir, "adapter_config.json"), Good + new string(' ', (int)LoraAdapter.MaxConfigBytes));
        Assert.Contains("more than the 1048576 a config may have", Refused(dir).Message);
    }

    [Fact]
    public void Confined_to_a_root_the_folder_and_each_file_must_really_lie_inside()
    {
        string root = Path.Combine(_dir, "root");
        string outside = Write(Good);
        Directory.CreateDirectory(root);
        LoraException Confined(string lora) => Assert.Throws<LoraException>(() => LoraAdapter.Load("bad", Path.Combine(root, lora), s_model.Value, 16, root));

        // Inside, also through a link that stays inside: loads.
        Directory.Move(Write(Good), Path.Combine(root, "good"));
        Directory.CreateSymbolicLink(Path.Combine(root, "alias"), "good");
        Assert.Equal(2, LoraAdapter.Load("alias", Path.Combine(root, "alias"), s_model.Value, 16, root).Weights.Count);
        // The folder is a link out, or one of its files is.
        Directory.CreateSymbolicLink(Path.Combine(root, "out"), outside);
        Assert.Contains("leads outside the LoRA root", Confined("out").Message);
        Directory.CreateDirectory(Path.Combine(root, "files"));
        File.Copy(Path.Combine(outside, "adapter_config.json"), Path.Combine(root, "files", "adapter_config.json"));
        File.CreateSymbolicLink(Path.Combine(root, "files", "adapter_model.safetensors"), Path.Combine(outside, "adapter_model.safetensors"));
        Assert.Contains("leads outside the LoRA root", Confined("files").Message);
        // A link loop is a refusal, not a crash.
        Directory.CreateSymbolicLink(Path.Combine(root, "loop"), "loop");
        Assert.Contains("symbolic link loop", Confined("loop").Message);
        // Without a root the same links are followed (static adapters are trusted).
        Assert.Equal(2, LoraAdapter.Load("out", Path.Combine(root, "out"), s_model.Value, 16).Weights.Count);
    }
}
