using System.CommandLine;

namespace LoraEngine.Cli;

/// <summary><c>loraengine bench tensors|attention|linear|serving ...</c>: the benchmarks of bench/ (see BenchRunner).</summary>
internal static class BenchCommand
{
    public static Command Create()
    {
        var rest = new Argument<string[]>("args") { Description = "tensors [--quick] | attention [--quick] | linear OUT IN TOKENS [auto|split-k|split-rows] | serving [--shape 1b|cpu-peer|small|shipped] [--quick] [--only NAME,...] [--system-prompt N] [--own-prompt M] [--tensor-parallel-size N] [--fully-sharded-loras] [--out DIR]", Arity = ArgumentArity.ZeroOrMore };
        var command = new Command("bench", "Run the kernel or serving benchmarks") { rest };
        command.TreatUnmatchedTokensAsErrors = false;
        command.SetAction(p => LoraEngine.Bench.BenchRunner.Run([.. p.GetValue(rest) ?? [], .. p.UnmatchedTokens]));
        return command;
    }
}
