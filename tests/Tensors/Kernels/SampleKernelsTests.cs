using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

/// <summary>
/// Device sampling (SampleOps) against the sort-based reference on every device — the kernels on the configured device
/// and the CPU device's host implementation — plus its promises: a row's result is the same alone or in any batch, the
/// logits come back unedited, and draws follow the distribution the parameters define.
/// </summary>
public class SampleKernelsTests
{
    internal sealed record Case(int Vocab, float[] Logits, SampleRow[] Rows, TokenEdit[] Edits);

    internal static Case NewCase(int seed, int maxRows = 5, int maxVocab = 700, int minVocab = 1)
    {
        var rnd = new RandomData(seed);
        int rows = rnd.Int(1, maxRows), vocab = rnd.Int(minVocab, maxVocab);
        var logits = rnd.Floats(rows * vocab, 6f);
        for (int i = 0; i + 5 < logits.Length; i += 11) logits[i + 5] = logits[i]; // ties: the lowest id must win
        if (rnd.Int(0, 9) == 0) logits[rnd.Int(0, logits.Length - 1)] = rnd.Int(0, 1) == 0 ? float.NaN : float.PositiveInfinity;
        float[] temperatures = [0f, 0.25f, 1f, 1.7f], topPs = [1f, 0.9f, 0.5f, 0.05f], minPs = [0f, 0f, 0.05f, 0.3f];
        var sampleRows = new SampleRow[rows];
        var edits = new List<TokenEdit>();
        for (int r = 0; r < rows; r++)
        {
            var mode = (SampleMode)rnd.Int(0, 2);
            int logprobs = rnd.Int(0, 3) switch { 0 => -1, 1 => 0, 2 => Math.Min(3, vocab), _ => Math.Min(rnd.Int(1, 40), vocab) };
            if (mode != SampleMode.Sample)
            {
                sampleRows[r] = new SampleRow(mode, Logprobs: logprobs, Target: rnd.Int(0, vocab - 1));
                continue;
            }
            var tokens = Enumerable.Range(0, vocab).OrderBy(_ => rnd.Random.Next()).Take(rnd.Int(0, Math.Min(vocab, 12))).ToArray();
            foreach (int token in tokens)
            {
                float bias = rnd.Int(0, 5) switch { 0 => float.NegativeInfinity, 1 => 0, _ => rnd.Floats(1, 5f)[0] };
                edits.Add(new TokenEdit(token, bias, Seen: rnd.Int(0, 1) == 1, OutputCount: rnd.Int(0, 2) == 0 ? rnd.Int(1, 4) : 0));
            }
            sampleRows[r] = new SampleRow(SampleMode.Sample,
                Temperature: temperatures[rnd.Int(0, 3)],
                TopK: rnd.Int(0, 2) == 0 ? rnd.Int(1, vocab + 2) : 0,
                TopP: topPs[rnd.Int(0, 3)],
                MinP: minPs[rnd.Int(0, 3)],
                Seed: rnd.Random.NextInt64(long.MinValue, long.MaxValue),
                Sequence: rnd.Int(0, 3),
                Position: rnd.Int(0, 1000),
                RepetitionPenalty: rnd.Int(0, 1) == 0 ? 1f : 1.3f,
                PresencePenalty: rnd.Int(0, 1) == 0 ? 0f : 0.5f,
                FrequencyPenalty: rnd.Int(0, 1) == 0 ? 0f : -0.7f,
                Logprobs: logprobs,
                Edits: tokens.Length);
        }
        return new Case(vocab, logits, sampleRows, edits.ToArray());
    }

    internal sealed record Outcome(int Token, bool Finite, float Logprob, int Rank, int[] TopIds, float[] TopLogprobs);

    /// <summary>Runs <paramref name="rows"/> (with their edits) and returns each row's outcome and the logits afterwards.</summary>
    internal static (Outcome[] Rows, float[] After) Run(ComputeDevice device, int vocab, float[] logits, SampleRow[] rows, TokenEdit[] edits, int editCapacity = 4)
    {
        using var batch = new SampleBatch(device, rows.Length, vocab, editCapacity);
        batch.Write(rows, edits);
        using var x = device.Upload(logits, rows.Length, vocab);
        device.Sample.Run(batch, x);
        batch.Read(rows.Length, logprobs: true);
        var outcomes = rows.Select((row, r) =>
        {
            int n = Math.Max(row.Logprobs, 0);
            bool logprobs = row.Logprobs >= 0 && batch.Finite(r);
            return new Outcome(batch.Token(r), batch.Finite(r), logprobs ? batch.Logprob(r) : 0, logprobs ? batch.Rank(r) : 1,
                logprobs ? batch.TopIdsOf(r, n).ToArray() : [], logprobs ? batch.TopLogprobsOf(r, n).ToArray() : []);
        }).ToArray();
        return (outcomes, x.ToArray<float>());
    }

    [Property(MaxTest = 12)]
    public void Sampling_matches_the_reference_on_every_device(int seed) => MatchesReference(NewCase(seed));

    /// <summary>Vocabularies of 2049–7000 tokens: each row spread over 2–4 groups of the pick and select kernels.</summary>
    [Property(MaxTest = 4)]
    public void Sampling_over_several_groups_a_row_matches_the_reference(int seed) => MatchesReference(NewCase(seed, maxRows: 3, maxVocab: 7000, minVocab: 2049));

    static void MatchesReference(Case c)
    {
        var expected = SampleReference.Run(c.Logits, c.Vocab, c.Rows, c.Edits);
        foreach (var device in TestDevices.All)
        {
            var (actual, after) = Run(device, c.Vocab, c.Logits, c.Rows, c.Edits);
            Assert.Equal(c.Logits, after); // edits are undone: the raw logits stay for logprobs and later copies
            for (int r = 0; r < c.Rows.Length; r++)
            {
                string what = $"{device} row {r} ({c.Rows[r]}), vocab {c.Vocab}";
                var (e, a) = (expected[r], actual[r]);
                Assert.True(e.Finite == a.Finite, $"{what}: finite {a.Finite}, expected {e.Finite}");
                if (!e.Fragile) Assert.True(e.Token == a.Token, $"{what}: token {a.Token}, expected {e.Token}");
                if (!e.Finite || c.Rows[r].Logprobs < 0) continue;
                if (e.Token != a.Token) continue; // a fragile draw went the other way: its logprob is another token's
                Assert.Equal(e.TopIds, a.TopIds);
                Assert.True(e.Rank == a.Rank, $"{what}: rank {a.Rank}, expected {e.Rank}");
                Tolerance.AssertClose([a.Logprob, .. a.TopLogprobs], [e.Logprob, .. e.TopLogprobs], 2e-5, 1e-5, what);
            }
        }
    }

    [Property(MaxTest = 4)]
    public void A_row_gives_the_same_token_and_logprobs_alone_and_in_any_batch(int seed)
    {
        var c = NewCase(seed, maxRows: 4, maxVocab: 300);
        int rows = c.Rows.Length, vocab = c.Vocab;
        var editStarts = c.Rows.Select((_, r) => c.Rows.Take(r).Sum(x => x.Edits)).ToArray();
        float[] LogitsOf(int r) => c.Logits.AsSpan(r * vocab, vocab).ToArray();
        TokenEdit[] EditsOf(int r) => c.Edits.AsSpan(editStarts[r], c.Rows[r].Edits).ToArray();
        // The same rows in reverse order behind a padding row: every row at another index of a larger batch.
        var order = Enumerable.Range(0, rows).Reverse().ToArray();
        float[] shuffledLogits = [.. new float[vocab], .. order.SelectMany(LogitsOf)];
        SampleRow[] shuffledRows = [SampleRow.Greedy, .. order.Select(r => c.Rows[r])];
        TokenEdit[] shuffledEdits = [.. order.SelectMany(EditsOf)];
        foreach (var device in TestDevices.All)
        {
            var (together, _) = Run(device, vocab, c.Logits, c.Rows, c.Edits);
            var (alone, _) = Run(device, vocab, LogitsOf(0), [c.Rows[0]], EditsOf(0));
            var (shuffled, _) = Run(device, vocab, shuffledLogits, shuffledRows, shuffledEdits);
            AssertSame(together[0], alone[0]);
            for (int j = 0; j < rows; j++) AssertSame(together[order[j]], shuffled[1 + j]);
        }
    }

    static void AssertSame(Outcome expected, Outcome actual)
    {
        Assert.Equal(expected.Token, actual.Token);
        Assert.Equal(expected.Finite, actual.Finite);
        Assert.Equal(expected.Logprob, actual.Logprob);
        Assert.Equal(expected.Rank, actual.Rank);
        Assert.Equal(expected.TopIds, actual.TopIds);
        Assert.Equal(expected.TopLogprobs, actual.TopLogprobs);
    }

    /// <summary>The tokens of <paramref name="draws"/> rows that differ only in their output position.</summary>
    static int[] Draw(ComputeDevice device, float[] logits, SampleRow row, int draws)
    {
        var rows = Enumerable.Range(0, draws).Select(i => row with { Position = i }).ToArray();
        var all = Enumerable.Range(0, draws).SelectMany(_ => logits).ToArray();
        return Run(device, logits.Length, all, rows, []).Rows.Select(o => o.Token).ToArray();
    }

    [Theory]
    [InlineData(1f, 0.75)]   // p ∝ (1, 3)
    [InlineData(0.5f, 0.9)]  // p ∝ (1, 9): temperature ½ squares the odds
    public void Draws_follow_the_softmax_at_the_temperature(float temperature, double expected)
    {
        float[] logits = [0f, MathF.Log(3f)];
        foreach (var device in TestDevices.ForModels) // many rows: the CPU accelerator's kernels are covered by the reference property
        {
            var tokens = Draw(device, logits, new SampleRow(SampleMode.Sample, Temperature: temperature, Seed: 5), 1200);
            Assert.InRange(tokens.Count(t => t == 1) / 1200.0, expected - 0.04, expected + 0.04);
        }
    }

    /// <summary>
    /// The CPU device's sampler (its own host code, with shortcuts that skip work whose outcome is fixed) picks exactly
    /// the kernels' tokens, fragile draws included: the same scores in the same comparisons.
    /// </summary>
    [Property(MaxTest = 12)]
    public void The_host_sampler_picks_the_kernels_tokens(int seed)
    {
        var c = NewCase(seed);
        var (kernels, _) = Run(TestDevices.Cpu, c.Vocab, c.Logits, c.Rows, c.Edits);
        var (host, _) = Run(TestDevices.CpuFast, c.Vocab, c.Logits, c.Rows, c.Edits);
        for (int r = 0; r < c.Rows.Length; r++)
            Assert.True(kernels[r].Token == host[r].Token, $"row {r} ({c.Rows[r]}), vocab {c.Vocab}: host {host[r].Token}, kernels {kernels[r].Token}");
    }

    /// <summary>
    /// Top-p after top-k never brings back what top-k removed: with these logits the top-p select stops on a bare key
    /// prefix below the top-k threshold (the kernels drew token 4 at seed 0 before they took the larger of the two).
    /// </summary>
    [Fact]
    public void Top_p_after_top_k_keeps_only_what_top_k_kept()
    {
        float[] logits = [-0.15f, -0.2401f, -0.25f, -0.2394f, -0.2f];
        var row = new SampleRow(SampleMode.Sample, Temperature: 1f, TopK: 1, TopP: 0.5f);
        foreach (var device in TestDevices.All.Append(TestDevices.Cpu).Distinct())
            Assert.All(Draw(device, logits, row, 64), t => Assert.Equal(0, t));
    }

    [Fact]
    public void Top_k_top_p_and_min_p_keep_the_tokens_they_define()
    {
        float[] logits = [1f, 3f, 2f, 3f, -1f]; // ids 1 and 3 tie for the top: key order 1, 3, 2, 0, 4
        var plain = new SampleRow(SampleMode.Sample, Temperature: 1, Seed: 11);
        foreach (var device in TestDevices.ForModels)
        {
            Assert.All(Draw(device, logits, plain with { TopK = 1 }, 200), t => Assert.Equal(1, t));
            Assert.All(Draw(device, logits, plain with { TopP = 0.01f }, 200), t => Assert.Equal(1, t));
            // p ∝ e^logit: p(2)/p(1) = e^-1 ≈ 0.37, p(0)/p(1) = e^-2 ≈ 0.14, so min_p 0.2 keeps 1, 3 and 2.
            Assert.Equal([1, 2, 3], Draw(device, logits, plain with { MinP = 0.2f }, 400).Distinct().Order());
            Assert.Equal([1, 3], Draw(device, logits, plain with { TopK = 2 }, 200).Distinct().Order());
            // Probabilities 0.40, 0.40, 0.15, 0.05, 0.01 in key order: top_p 0.5 needs ids 1 and 3, 0.85 also id 2.
            Assert.Equal([1, 3], Draw(device, logits, plain with { TopP = 0.5f }, 200).Distinct().Order());
            Assert.Equal([1, 2, 3], Draw(device, logits, plain with { TopP = 0.85f }, 400).Distinct().Order());
        }
    }

    [Fact]
    public void Edits_apply_bias_then_repetition_then_presence_and_frequency()
    {
        // vLLM's semantics: prompt [0], output [1, 1] with repetition 2, presence 0.5, frequency 0.25.
        Assert.Equal(1f, SampleMath.Edit(2f, 0, seen: true, outputCount: 0, 2, 0.5f, 0.25f));
        Assert.Equal(-4f - 0.5f - 0.5f, SampleMath.Edit(-2f, 0, seen: true, outputCount: 2, 2, 0.5f, 0.25f));
        Assert.Equal(float.NegativeInfinity, SampleMath.Edit(5f, float.NegativeInfinity, seen: true, outputCount: 3, 2, 0.5f, 0.25f));
        Assert.Equal(3f, SampleMath.Edit(4f, 2f, seen: true, outputCount: 0, 2, 0, 0)); // bias first: (4 + 2) / 2

        float[] logits = [2f, -2f, 1f, 0.5f];
        var greedy = new SampleRow(SampleMode.Sample, Temperature: 0, Edits: 2);
        foreach (var device in TestDevices.All)
        {
            TokenEdit[] edits = [TokenEdit.Ban(0), new(3, 10f)];
            Assert.Equal(3, Run(device, 4, logits, [greedy], edits).Rows[0].Token);
            Assert.Equal(2, Run(device, 4, logits, [greedy], [TokenEdit.Ban(0), new(3, -1f)]).Rows[0].Token);
        }
    }

    [Fact]
    public void Logprobs_are_of_the_raw_logits_whatever_the_edits()
    {
        float[] logits = [0f, 1f, 2f, 3f];
        var row = new SampleRow(SampleMode.Sample, Temperature: 0, Logprobs: 2, Edits: 1);
        foreach (var device in TestDevices.All)
        {
            var outcome = Run(device, 4, logits, [row], [new TokenEdit(0, 100f)]).Rows[0];
            Assert.Equal(0, outcome.Token);
            Assert.Equal(4, outcome.Rank);
            Assert.Equal([3, 2], outcome.TopIds);
            double lse = Math.Log(logits.Sum(v => Math.Exp(v)));
            Assert.Equal(-lse, outcome.Logprob, 5);
            Assert.Equal(3 - lse, outcome.TopLogprobs[0], 5);
        }
    }

    [Fact]
    public void Any_NaN_or_infinity_in_a_row_flags_it_whatever_its_mode()
    {
        float[] logits = [0f, float.NaN, 1f, 0f, float.PositiveInfinity, 1f, 2f, float.NaN, 4f, 2f, 3f, 4f, -2f, 0f, 9f];
        SampleRow[] rows =
        [
            new(SampleMode.Sample, Temperature: 1, Edits: 1),
            new(SampleMode.Argmax, Logprobs: 1),
            SampleRow.Greedy,       // its maximum is finite: a NaN beside it still fails the row
            SampleRow.Greedy,
            new(SampleMode.Sample, Temperature: 1, Edits: 1), // a ban is a −∞ of the edits, not of the model
        ];
        foreach (var device in TestDevices.All)
        {
            var outcome = Run(device, 3, logits, rows, [new TokenEdit(2, 1f), TokenEdit.Ban(1)]).Rows;
            Assert.Equal([false, false, false, true, true], outcome.Select(o => o.Finite));
            Assert.Equal(2, outcome[2].Token);
            Assert.Equal(2, outcome[3].Token);
            Assert.Equal(2, outcome[4].Token); // 9 ≫ −2: the draw all but surely takes it
        }
    }

    [Fact]
    public void Write_refuses_bad_rows_and_edits_before_writing_anything()
    {
        using var batch = new SampleBatch(TestDevices.Cpu, 2, 10);
        Assert.Equal("rows", Assert.Throws<ArgumentException>(() => batch.Write([SampleRow.Greedy, SampleRow.Greedy, SampleRow.Greedy], [])).ParamName);
        Assert.Equal("rows", Assert.Throws<ArgumentException>(() => batch.Write([new SampleRow(SampleMode.Sample, Temperature: -1)], [])).ParamName);
        Assert.Equal("rows", Assert.Throws<ArgumentException>(() => batch.Write([new SampleRow(SampleMode.Argmax, Logprobs: SampleBatch.MaxLogprobs + 1)], [])).ParamName);
        Assert.Equal("rows", Assert.Throws<ArgumentException>(() => batch.Write([new SampleRow(SampleMode.Score, Target: 10)], [])).ParamName);
        Assert.Equal("rows", Assert.Throws<ArgumentException>(() => batch.Write([new SampleRow(SampleMode.Argmax, Edits: 1)], [new TokenEdit(1, 1f)])).ParamName);
        Assert.Equal("edits", Assert.Throws<ArgumentException>(() => batch.Write([new SampleRow(SampleMode.Sample, Edits: 1)], [])).ParamName);
        Assert.Equal("edits", Assert.Throws<ArgumentException>(() => batch.Write([new SampleRow(SampleMode.Sample, Edits: 1)], [new TokenEdit(10, 1f)])).ParamName);
        Assert.Equal(0, batch.Rows);
    }

    [Fact]
    public void More_edits_than_ever_reallocate_and_change_the_version()
    {
        using var batch = new SampleBatch(TestDevices.CpuFast, 1, 50, editCapacity: 2);
        var edits = Enumerable.Range(0, 3).Select(i => new TokenEdit(i, 1f)).ToArray();
        batch.Write([new SampleRow(SampleMode.Sample, Edits: 2)], edits[..2]);
        Assert.Equal(0, batch.Version);
        batch.Write([new SampleRow(SampleMode.Sample, Edits: 3)], edits);
        Assert.Equal(1, batch.Version);
        batch.Write([new SampleRow(SampleMode.Sample, Edits: 1)], edits[..1]);
        Assert.Equal(1, batch.Version);
    }
}
