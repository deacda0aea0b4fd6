using System.Net;
using System.Net.Http.Json;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Server.Tests;

/// <summary>Runtime adapter loading: vLLM's texts, confinement to --lora-root, bad adapters refused while serving goes on.</summary>
public class AdminApiTests(ServerFixture server) : IClassFixture<ServerFixture>
{
    static void CopyDir(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from)) File.Copy(f, Path.Combine(to, Path.GetFileName(f)), true);
    }

    async Task<(HttpStatusCode Status, string Body)> Post(string route, object body)
    {
        using var http = server.Http();
        var r = await http.PostAsJsonAsync(route, body, TestContext.Current.CancellationToken);
        return (r.StatusCode, await r.Content.ReadAsStringAsync(TestContext.Current.CancellationToken));
    }

    [Fact]
    public async Task Load_use_and_unload_an_adapter_inside_the_root()
    {
        CopyDir(Fixtures.Adapter("vim-upper"), Path.Combine(server.LoraRoot, "upper-copy"));
        var (status, body) = await Post("/v1/load_lora_adapter", new { lora_name = "upper2", lora_path = "upper-copy" });
        Assert.Equal(HttpStatusCode.OK, status);
        Assert.Equal("Success: LoRA adapter 'upper2' added successfully.", body);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/load_lora_adapter", new { lora_name = "upper2", lora_path = "upper-copy" })).Status);
        var (completionStatus, completion) = await Post("/v1/completions", new { model = "upper2", prompt = "Vim is", max_tokens = 8, temperature = 0 });
        Assert.Equal(HttpStatusCode.OK, completionStatus);
        Assert.Contains("\"model\":\"upper2\"", completion);
        (status, body) = await Post("/v1/unload_lora_adapter", new { lora_name = "upper2" });
        Assert.Equal("Success: LoRA adapter 'upper2' removed successfully.", body);
        Assert.Equal(HttpStatusCode.NotFound, (await Post("/v1/unload_lora_adapter", new { lora_name = "upper2" })).Status);
        Assert.Equal(HttpStatusCode.NotFound, (await Post("/v1/completions", new { model = "upper2", prompt = "x" })).Status);
    }

    [Fact]
    public async Task Paths_outside_the_root_dotdot_and_symlinks_out_are_400()
    {
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/load_lora_adapter", new { lora_name = "out", lora_path = Fixtures.Adapter("vim-upper") })).Status);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/load_lora_adapter", new { lora_name = "dots", lora_path = "../escape" })).Status);
        string link = Path.Combine(server.LoraRoot, "link-out");
        Directory.CreateSymbolicLink(link, Fixtures.Adapter("vim-upper"));
        var (status, body) = await Post("/v1/load_lora_adapter", new { lora_name = "link", lora_path = "link-out" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("outside the LoRA root", body);
        string fileLinks = Path.Combine(server.LoraRoot, "file-links");
        Directory.CreateDirectory(fileLinks);
        foreach (var f in Directory.GetFiles(Fixtures.Adapter("vim-upper"))) File.CreateSymbolicLink(Path.Combine(fileLinks, Path.GetFileName(f)), f);
        Assert.Equal(HttpStatusCode.BadRequest, (await Post("/v1/load_lora_adapter", new { lora_name = "files", lora_path = "file-links" })).Status);
        var (missing, why) = await Post("/v1/load_lora_adapter", new { lora_name = "x", lora_path = "" });
        Assert.Equal(HttpStatusCode.BadRequest, missing);
        Assert.Contains("\"param\":\"lora_path\"", why);
        Assert.Contains("\"param\":\"lora_name\"", (await Post("/v1/load_lora_adapter", new { lora_path = "upper-copy" })).Body);
    }

    [Fact]
    public async Task A_bad_adapter_is_400_with_the_loader_message_and_serving_goes_on()
    {
        string dir = Path.Combine(server.LoraRoot, "dora");
        CopyDir(Fixtures.Adapter("vim-random-qv-r4"), dir);
        string config = Path.Combine(dir, "adapter_config.json");
        File.WriteAllText(config, File.ReadAllText(config).Replace("\"use_dora\": false", "\"use_dora\": true"));
        var (status, body) = await Post("/v1/load_lora_adapter", new { lora_name = "dora", lora_path = "dora" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("DoRA", body);
        Assert.Equal(HttpStatusCode.NotFound, (await Post("/v1/load_lora_adapter", new { lora_name = "ghost", lora_path = "ghost" })).Status);
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/completions", new { model = "vim-upper", prompt = "Vim is", max_tokens = 4 })).Status);
    }

    [Fact]
    public async Task Load_and_unload_refuse_unknown_fields_and_wrong_types_naming_the_field()
    {
        CopyDir(Fixtures.Adapter("vim-upper"), Path.Combine(server.LoraRoot, "strict-copy"));
        var (status, body) = await Post("/v1/load_lora_adapter", new { lora_name = "strict", lora_path = "strict-copy", lora_scale = 2 });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("Unrecognized request argument supplied: lora_scale", body);
        (status, body) = await Post("/v1/load_lora_adapter", new { lora_name = 5, lora_path = "strict-copy" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("'lora_name' must be a string.", body);
        Assert.DoesNotContain("LoraEngine.Server", body);
        Assert.Equal(HttpStatusCode.NotFound, (await Post("/v1/completions", new { model = "strict", prompt = "x" })).Status);
        (status, body) = await Post("/v1/unload_lora_adapter", new { lora_name = "vim-upper", force = true });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("Unrecognized request argument supplied: force", body);
        Assert.Equal(HttpStatusCode.OK, (await Post("/v1/completions", new { model = "vim-upper", prompt = "x", max_tokens = 1 })).Status);
    }

    [Fact]
    public async Task An_adapter_may_not_take_the_base_models_name()
    {
        CopyDir(Fixtures.Adapter("vim-rot13"), Path.Combine(server.LoraRoot, "shadow-copy"));
        var (status, body) = await Post("/v1/load_lora_adapter", new { lora_name = "vim-tiny-bf16", lora_path = "shadow-copy" });
        Assert.Equal(HttpStatusCode.BadRequest, status);
        Assert.Contains("base model", body);
        using var http = server.Http();
        string models = await http.GetStringAsync("/v1/models", TestContext.Current.CancellationToken);
        Assert.Single(System.Text.RegularExpressions.Regex.Matches(models, "\"id\":\"vim-tiny-bf16\""));
    }

    [Fact]
    public async Task Concurrent_loads_and_unloads_of_one_name_leave_no_adapter_loaded_without_a_name()
    {
        CopyDir(Fixtures.Adapter("vim-rot13"), Path.Combine(server.LoraRoot, "churn-copy"));
        for (int round = 0; round < 20; round++)
            await Task.WhenAll(
                Post("/v1/unload_lora_adapter", new { lora_name = "churn" }),
                Post("/v1/load_lora_adapter", new { lora_name = "churn", lora_path = "churn-copy" }),
                Post("/v1/load_lora_adapter", new { lora_name = "churn", lora_path = "churn-copy", load_inplace = true }),
                Post("/v1/load_lora_adapter", new { lora_name = "churn", lora_path = "churn-copy" }));
        await Post("/v1/unload_lora_adapter", new { lora_name = "churn" });
        var named = server.State.Adapters.All.Select(a => a.Request.LoraIntId).ToHashSet();
        Assert.All(server.State.Engine.Engine.ListLoras(), id => Assert.Contains(id, named));
    }
}
