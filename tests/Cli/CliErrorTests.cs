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
        OneLine(error, "Model folder '/nonexistent' does not exist");
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
        OneLine(error, "MaxNumSeqs must be positive, got -1");
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
