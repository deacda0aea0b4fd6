// Entry point of the benchmark project; see BenchRunner for the commands.
return LoraEngine.Bench.BenchRunner.Run(args);
