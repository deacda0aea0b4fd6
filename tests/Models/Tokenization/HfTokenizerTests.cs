using System.Text.Json;
using System.Text.Json.Nodes;
using FsCheck.Xunit;
using LoraEngine.Models.Safetensors;
using LoraEngine.Models.Tokenization;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Models.Tests.Tokenization;

public class HfTokenizerTests
{
    static readonly Lazy<HfTokenizer> s_tokenizer = new(() => HfTokenizer.Load(Fixtures.Model("vim-tiny")));

    static string[] Prompts() => JsonDocument.Parse(File.ReadAllText(Fixtures.Golden("vim-tiny.json"))).RootElement
        .GetProperty("prompts").EnumerateArray().Select(p => p.GetString()!).ToArray();

    static void AssertGoldenIds(HfTokenizer tokenizer)
    {
        using var golden = SafetensorsFile.Open(Fixtures.Golden("vim-tiny.safetensors"));
        var prompts = Prompts();
        for (int i = 0; i < prompts.Length; i++)
        {
            var expected = golden.ReadInt64($"prompt{i}.ids").Select(v => (int)v).ToArray();
            Assert.Equal(expected, tokenizer.Encode(prompts[i]));
            Assert.Equal(prompts[i], tokenizer.Decode(expected, skipSpecialTokens: true));
        }
    }

    [Theory]
    [InlineData("vim-tiny")]
    [InlineData("vim-tiny-sharded")]
    public void Golden_prompt_ids_are_reproduced(string model) => AssertGoldenIds(HfTokenizer.Load(Fixtures.Model(model)));

    [Fact]
    public void Ignore_merges_takes_the_tiktoken_route_with_the_same_ids()
    {
        string dir = Path.Combine(Path.GetTempPath(), "loraengine-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var json = JsonNode.Parse(File.ReadAllText(Path.Combine(Fixtures.Model("vim-tiny"), "tokenizer.json")))!;
            json["model"]!["ignore_merges"] = true;
            File.WriteAllText(Path.Combine(dir, "tokenizer.json"), json.ToJsonString());
            AssertGoldenIds(HfTokenizer.Load(dir));
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }

    [Fact]
    public void Special_tokens_in_text_are_recognised_and_bos_is_added_once()
    {
        var t = s_tokenizer.Value;
        var ids = t.Encode("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nVim is<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", addSpecialTokens: false);
        Assert.Equal([0, 2, 533, 279, 3, 270, 58, 339, 353, 4, 2, 69, 513, 540, 646, 3, 270], ids);
        Assert.Equal(0, t.BosTokenId);
        Assert.Equal([0, 58, 339, 353], t.Encode("Vim is"));
        Assert.True(t.IsSpecial(4));
        Assert.NotNull(t.ChatTemplate);
        Assert.Contains(1, t.EosTokenIds);
    }

    [Fact]
    public void Streaming_decoder_never_emits_half_a_character()
    {
        var t = s_tokenizer.Value;
        const string text = " héllo wörld — 日本語 🙂 ü";
        var ids = t.Encode(text, addSpecialTokens: false);
        var decoder = t.CreateStreamingDecoder();
        var pieces = ids.Select(decoder.Push).ToList();
        pieces.Add(decoder.Flush());
        Assert.DoesNotContain(pieces, p => p.Contains('\uFFFD'));
        Assert.Equal(text, string.Concat(pieces));
    }

    [Property(MaxTest = 100)]
    public void Decode_inverts_encode(string? s)
    {
        s ??= "";
        if (s.Any(char.IsSurrogate) || s.Contains("<|")) return; // lone surrogates are not UTF-8; specials are tokens
        var t = s_tokenizer.Value;
        Assert.Equal(s, t.Decode(t.Encode(s, addSpecialTokens: false)));
    }

    [Fact]
    public void Malformed_tokenizer_files_name_the_file()
    {
        string dir = Path.Combine(Path.GetTempPath(), "loraengine-tok-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            string path = Path.Combine(dir, "tokenizer.json");
            File.WriteAllText(path, "{\"model\": {\"type\": \"BPE\"}}");
            Assert.Contains(path, Assert.Throws<InvalidDataException>(() => HfTokenizer.Load(dir)).Message);
            File.WriteAllText(path, "{oops");
            Assert.Contains(path, Assert.Throws<InvalidDataException>(() => HfTokenizer.Load(dir)).Message);
        }
        finally
        {
            Directory.Delete(dir, true);
        }
    }
}
