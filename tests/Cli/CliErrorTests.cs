using System.Net;
using System.Net.Sockets;
using LoraEngine.Tensors;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Cli.Tests;

/// <summary>A user error is one line on stderr and a non-zero exit; the stack trace only with --verbose.</summary>
public class CliErrorTests
{
    static async Task<(int Exit, string Error)> Run(params string[] args)
    {
        var error = new StringWriter();
        int exit = await CliApp.RunAsync(args, error);
        return (exit, error.ToString());
    }

    static void OneLine(string error, string expected)
    {
        var lines = error.Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.True(lines.Length == 1, $"one line on stderr, got:\n{error}");
        Assert.StartsWith("error: ", lines[0]);
        Assert.Contains(expected, lines[0]);
        Assert.DoesNotContain("Exception", lines[0]);
    }

    [Fact]
    public async Task A_missing_model_folder()
    {
        var (exit, error) = await Run("generate", "hi", "--model", "/nonexistent");
        Assert.Equal(1, exit);
        OneLine(error, "--model folder '/nonexistent' does not exist");
    }

    [Fact]
    public async Task A_missing_adapter()
    {
        var (exit, error) = await Run("generate", "hi", "--lora", "foo=/nonexistent", "--max-tokens", "2");
        Assert.Equal(1, exit);
        OneLine(error, "LoRA adapter 'foo' (/nonexistent): No adapter found");
    }

    [Fact]
    public async Task Generate_honours_max_num_seqs_instead_of_overriding_it()
    {
        var (exit, error) = await Run("generate", "hi", "--max-num-seqs", "-1", "--max-tokens", "2", "--device", "cpu");
        Assert.Equal(1, exit);
        OneLine(error, "--max-num-seqs must be positive, got -1");
    }

    [Theory]
    [InlineData("--max-loras", "0", "--max-loras must be positive, got 0")]
    [InlineData("--max-model-len", "-3", "--max-model-len must be positive, got -3")]
    public async Task An_engine_option_out_of_range_is_named_as_typed_without_dotnets_additions(string option, string value, string expected)
    {
        var (exit, error) = await Run("generate", "hi", option, value, "--max-tokens", "2", "--device", "cpu");
        Assert.Equal(1, exit);
        OneLine(error, expected);
        Assert.DoesNotContain("Actual value", error);
    }

    [Fact]
    public async Task A_file_given_as_the_model_folder()
    {
        string config = Path.Combine(Fixtures.Model("vim-tiny-bf16"), "config.json");
        var (exit, error) = await Run("generate", "hi", "--model", config, "--max-tokens", "2");
        Assert.Equal(1, exit);
        OneLine(error, $"--model '{config}' is a file: give the model's folder");
    }

    [Theory]
    [InlineData(new[] { "--drain-timeout", "NaN" }, "--drain-timeout must be a finite number of seconds, got NaN")]
    [InlineData(new[] { "--drain-timeout", "1e300" }, "--drain-timeout must be a finite number of seconds, got 1E+300")]
    [InlineData(new[] { "--api-key", "" }, "--api-key is empty")]
    [InlineData(new[] { "--lora-root", "/tmp" }, "--lora-root confines adapters loaded at run time: it needs --allow-runtime-lora-updating")]
    public async Task A_serve_option_that_cannot_work_is_refused_by_name(string[] option, string expected)
    {
        var (exit, error) = await Run(["serve", "--model", Fixtures.Model("vim-tiny-bf16"), "--port", "0", "--device", "cpu", .. option]);
        Assert.Equal(1, exit);
        OneLine(error, expected);
    }

    [Fact]
    public async Task A_parameter_out_of_range()
    {
        var (exit, error) = await Run("generate", "hi", "--temperature", "-1", "--max-tokens", "2");
        Assert.Equal(1, exit);
        OneLine(error, "temperature must be non-negative, got -1.");
    }

    [Theory]
    [InlineData("""{"name": "a"}""", "--lora-modules: the JSON form needs \"name\" and \"path\" strings")]
    [InlineData("""{"name": 5, "path": "/tmp"}""", "--lora-modules: the JSON form needs \"name\" and \"path\" strings")]
    [InlineData("""{bad json""", "--lora-modules: not valid JSON (byte 2)")]
    [InlineData("""{"name": "a", "path": "/tmp", "base_model": "m"}""", "--lora-modules: unknown field 'base_model'")]
    public async Task A_lora_module_in_json_that_is_malformed_is_refused_naming_the_option(string module, string expected)
    {
        var (exit, error) = await Run("serve", "--model", Fixtures.Model("vim-tiny-bf16"), "--lora-modules", module, "--port", "0", "--device", "cpu");
        Assert.Equal(1, exit);
        OneLine(error, expected);
    }

    [Theory]
    [InlineData("999.1.1.1")]
    [InlineData("127.0.0.l")]
    public async Task A_host_that_is_not_an_address_is_refused_not_bound_to_every_interface(string host)
    {
        // Kestrel listens on every interface for a host it cannot parse as an IP address or localhost.
        var run = Run("serve", "--model", Fixtures.Model("vim-tiny-bf16"), "--host", host, "--port", "0", "--device", "cpu");
        Assert.True(await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(60), TestContext.Current.CancellationToken)) == run, $"serve --host {host} started");
        var (exit, error) = await run;
        Assert.Equal(1, exit);
        OneLine(error, $"--host '{host}' is not an IP address or localhost");
    }

    [Fact]
    public async Task A_port_in_use()
    {
        using var taken = new TcpListener(IPAddress.Loopback, 0);
        taken.Start();
        int port = ((IPEndPoint)taken.LocalEndpoint).Port;
        var (exit, error) = await Run("serve", "--model", Fixtures.Model("vim-tiny-bf16"), "--port", port.ToString(), "--device", "cpu");
        Assert.Equal(1, exit);
        OneLine(error, $"Failed to bind to address http://127.0.0.1:{port}: address already in use.");
    }

    [Fact]
    public async Task A_device_that_is_not_there()
    {
        try
        {
            using var gpu = ComputeDevice.Create("cuda");
            Assert.Skip("this machine has a CUDA device");
        }
        catch (InvalidOperationException)
        {
        }
        var (exit, error) = await Run("info", "--device", "cuda");
        Assert.Equal(1, exit);
        OneLine(error, "no CUDA device was found");
    }

    [Fact]
    public async Task A_command_line_that_does_not_parse_is_exit_code_2()
    {
        var (exit, error) = await Run("generate", "hi", "--max-tokens", "abc");
        Assert.Equal(2, exit);
        OneLine(error, "Cannot parse argument 'abc' for option '--max-tokens'");
    }

    [Fact]
    public async Task Verbose_prints_the_stack_trace()
    {
        var (exit, error) = await Run("generate", "hi", "--model", "/nonexistent", "--verbose");
        Assert.Equal(1, exit);
        Assert.Contains("System.ArgumentException: Model folder '/nonexistent' does not exist", error);
        Assert.Contains("   at LoraEngine.EngineArgs.CreateEngineConfig", error);
    }
}
