using System.CommandLine;
using Xunit;

namespace LoraEngine.Cli.Tests;

/// <summary>The engine flags shared by the commands map onto EngineArgs as vLLM's do.</summary>
public class CommonOptionsTests
{
    static (ParseResult Parse, CommonOptions Options) Parse(params string[] args)
    {
        var options = new CommonOptions();
        var command = new Command("x");
        options.AddTo(command);
        return (command.Parse(["--model", "m", .. args]), options);
    }

    [Theory]
    [InlineData(new string[0], true)] // on by default, as vLLM's V1 engine
    [InlineData(new[] { "--enable-prefix-caching" }, true)]
    [InlineData(new[] { "--no-enable-prefix-caching" }, false)]
    [InlineData(new[] { "--enable-prefix-caching", "false" }, false)]
    public void Prefix_caching_flags(string[] args, bool enabled)
    {
        var (parse, options) = Parse(args);
        Assert.Empty(parse.Errors);
        Assert.Equal(enabled, options.EngineArgs(parse).EnablePrefixCaching);
    }

    [Fact]
    public void Both_prefix_caching_flags_are_a_parse_error()
    {
        var (parse, _) = Parse("--enable-prefix-caching", "--no-enable-prefix-caching");
        Assert.Contains(parse.Errors, e => e.Message.Contains("contradict"));
    }

    [Fact]
    public void Tensor_parallel_flags_reach_the_engine_args()
    {
        var (parse, options) = Parse("-tp", "2", "--fully-sharded-loras");
        Assert.Empty(parse.Errors);
        var args = options.EngineArgs(parse);
        Assert.Equal((2, true), (args.TensorParallelSize, args.FullyShardedLoras));
        var (defaults, o) = Parse();
        Assert.Equal((1, false), (o.EngineArgs(defaults).TensorParallelSize, o.EngineArgs(defaults).FullyShardedLoras));
    }
}
