namespace LoraEngine.Tensors.Kernels;

/// <summary>What a logits row is for.</summary>
public enum SampleMode
{
    /// <summary>Greedy with nothing to change first: the row's argmax (ties: lowest id). Padding rows use it.</summary>
    Argmax = 0,
    /// <summary>Edits, then temperature (0: argmax of the edited row), min-p, top-k, top-p and a Philox draw.</summary>
    Sample = 1,
    /// <summary>No draw: the logprob and rank of a given token (<see cref="SampleRow.Target"/>), e.g. a prompt token.</summary>
    Score = 2,
}

/// <summary>
/// How one logits row is turned into a token, as the sampling kernels read it.
/// The draw for vocabulary entry i is <see cref="Philox.Uniform"/>(Seed, Sequence, Position, i): the same row gives the
/// same token alone, in any batch, in any process and on any device that computes the same logits.
/// </summary>
/// <param name="Mode">what the row is for</param>
/// <param name="Temperature">0: the argmax of the edited logits</param>
/// <param name="TopK">≤ 0 (or ≥ vocab): off</param>
/// <param name="TopP">≥ 1: off</param>
/// <param name="MinP">≤ 0: off</param>
/// <param name="Seed">the request's seed (a key of every draw)</param>
/// <param name="Sequence">which of the seed's streams (a request's sequence index)</param>
/// <param name="Position">the output position being sampled (tokens generated so far)</param>
/// <param name="RepetitionPenalty">1: off; divides positive (multiplies negative) logits of edits marked seen</param>
/// <param name="PresencePenalty">subtracted from the logits of edits with an output count</param>
/// <param name="FrequencyPenalty">times the output count, subtracted from the same logits</param>
/// <param name="Logprobs">−1: no logprobs; n ≥ 0: the token's logprob and rank and the top n (at most <see cref="SampleBatch.MaxLogprobs"/>)</param>
/// <param name="Target">the token a <see cref="SampleMode.Score"/> row scores</param>
/// <param name="Edits">how many of the batch's <see cref="TokenEdit"/>s, in row order, belong to this row</param>
public readonly record struct SampleRow(
    SampleMode Mode,
    float Temperature = 0,
    int TopK = 0,
    float TopP = 1,
    float MinP = 0,
    long Seed = 0,
    int Sequence = 0,
    int Position = 0,
    float RepetitionPenalty = 1,
    float PresencePenalty = 0,
    float FrequencyPenalty = 0,
    int Logprobs = -1,
    int Target = 0,
    int Edits = 0)
{
    /// <summary>A row whose argmax is all that is wanted (and a harmless padding row).</summary>
    public static SampleRow Greedy { get; } = new(SampleMode.Argmax);
}

/// <summary>
/// A change to one token's logit before a <see cref="SampleMode.Sample"/> row is sampled (see SampleMath.Edit):
/// <c>v = raw + Bias</c>; if <paramref name="Seen"/>, the repetition penalty; if <paramref name="OutputCount"/> &gt; 0,
/// presence and frequency. A row's edits name distinct tokens. Logprobs are always of the raw logits.
/// </summary>
/// <param name="TokenId">the token whose logit changes</param>
/// <param name="Bias">logit_bias plus −∞ for a banned token</param>
/// <param name="Seen">the token is in the prompt or the output</param>
/// <param name="OutputCount">how often the token was generated</param>
public readonly record struct TokenEdit(int TokenId, float Bias, bool Seen = false, int OutputCount = 0)
{
    /// <summary>The token can not be drawn (its logit becomes −∞).</summary>
    public static TokenEdit Ban(int tokenId) => new(tokenId, float.NegativeInfinity);
}

/// <summary>
/// The device buffers of one batch of sampled rows, allocated once (a CUDA graph that captured the sampling kernels
/// reads them at fixed addresses): per-row parameters and edits, written before each run, and the results, read after.
/// Only ids, flags and the requested top-n logprobs come back to the host; host arrays are allocated here, once.
/// </summary>
public sealed class SampleBatch : IDisposable
{
    /// <summary>Largest top-n a row can ask of the device.</summary>
    public const int MaxLogprobs = 64;

    internal const int IntParams = 10, FloatParams = 6, EditInts = 3, EditFloats = 2, OutInts = 3;
    // Row ints: mode, top_k, seed (lo, hi), sequence, position, edit start, edit count, logprobs, target.
    internal const int PMode = 0, PTopK = 1, PSeedLo = 2, PSeedHi = 3, PSequence = 4, PPosition = 5, PEditStart = 6, PEditCount = 7, PLogprobs = 8, PTarget = 9;
    // Row floats: temperature, top_p, min_p, repetition, presence, frequency.
    internal const int PTemperature = 0, PTopP = 1, PMinP = 2, PRepetition = 3, PPresence = 4, PFrequency = 5;
    // Out ints: token, finite (1/0), rank.
    internal const int OToken = 0, OFinite = 1, ORank = 2;

    const int PartQuads = 512; // vocabulary entries / 4 per group of the pick kernel

    readonly ComputeDevice _device;
    readonly int[] _rowInts, _outInts;
    readonly float[] _rowFloats, _outLogprob, _topLogprobs;
    readonly int[] _topIds;
    int[] _editInts = [];
    float[] _editFloats = [];

    /// <summary>Allocates the buffers for up to <paramref name="maxRows"/> rows of <paramref name="vocab"/> logits.</summary>
    /// <param name="device">where the kernels run</param>
    /// <param name="maxRows">most rows one run samples</param>
    /// <param name="vocab">the logits' row length</param>
    /// <param name="editCapacity">edits the buffers hold before they grow (growing changes <see cref="Version"/>)</param>
    public SampleBatch(ComputeDevice device, int maxRows, int vocab, int editCapacity = 1024)
    {
        ArgumentNullException.ThrowIfNull(device);
        Check.Positive(maxRows, nameof(maxRows));
        Check.Positive(vocab, nameof(vocab));
        _device = device;
        MaxRows = maxRows;
        Vocab = vocab;
        Parts = Math.Clamp(((vocab + 3) / 4 + PartQuads - 1) / PartQuads, 1, 64);
        RowInts = device.Zeros(DType.I32, maxRows, IntParams);
        RowFloats = device.Zeros(DType.F32, maxRows, FloatParams);
        Thresholds = device.Zeros(DType.I32, maxRows, 2);
        Maxima = device.Zeros(DType.F32, maxRows);
        PartialValues = device.Zeros(DType.F32, maxRows * Parts);
        PartialIndices = device.Zeros(DType.I32, maxRows * Parts);
        PartialNonFinite = device.Zeros(DType.I32, maxRows * Parts);
        SelectState = device.Zeros(DType.I32, maxRows, 2 * SelectStateLongs);
        HistogramCounts = device.Zeros(DType.I32, maxRows, 256);
        HistogramWeights = device.Zeros(DType.I32, maxRows, 2 * 256);
        Arrivals = device.Zeros(DType.I32, maxRows);
        Out = device.Zeros(DType.I32, maxRows, OutInts);
        OutLogprob = device.Zeros(DType.F32, maxRows);
        TopIds = device.Zeros(DType.I32, maxRows, MaxLogprobs);
        TopLogprobs = device.Zeros(DType.F32, maxRows, MaxLogprobs);
        _rowInts = new int[maxRows * IntParams];
        _rowFloats = new float[maxRows * FloatParams];
        _outInts = new int[maxRows * OutInts];
        _outLogprob = new float[maxRows];
        _topIds = new int[maxRows * MaxLogprobs];
        _topLogprobs = new float[maxRows * MaxLogprobs];
        EnsureEdits(Math.Max(editCapacity, 1));
    }

    /// <summary>Most rows one run samples.</summary>
    public int MaxRows { get; }

    /// <summary>Length of a logits row.</summary>
    public int Vocab { get; }

    /// <summary>Rows written by the last <see cref="Write"/>.</summary>
    public int Rows { get; private set; }

    /// <summary>Changes when the edit buffers are reallocated (more edits than ever before): graphs that captured them are stale.</summary>
    public int Version { get; private set; }

    /// <summary>Groups the pick kernel splits a row into.</summary>
    internal int Parts { get; }

    internal DeviceTensor RowInts { get; }         // [maxRows, IntParams] I32
    internal DeviceTensor RowFloats { get; }       // [maxRows, FloatParams] F32
    internal DeviceTensor EditIntsTensor { get; private set; } = null!;   // [capacity, 3] I32: token, output count, seen
    internal DeviceTensor EditFloatsTensor { get; private set; } = null!; // [capacity, 2] F32: bias, the raw logit (saved by the kernels)
    internal DeviceTensor Thresholds { get; }      // [maxRows, 2] I32: the lowest kept key (lo, hi)
    internal DeviceTensor Maxima { get; }          // [maxRows] F32: max of logits / temperature (min-p)
    internal DeviceTensor PartialValues { get; }   // [maxRows · parts] F32: each part's best score
    internal DeviceTensor PartialIndices { get; }  // [maxRows · parts] I32: and its token
    internal DeviceTensor PartialNonFinite { get; } // [maxRows · parts] I32: NaN and ±∞ the part saw
    internal DeviceTensor SelectState { get; }     // [maxRows, 2 · SelectStateLongs] I32 as ulong: a row's radix select across its parts
    internal DeviceTensor HistogramCounts { get; } // [maxRows, 256] I32 as uint: a select pass's counts, summed over the parts
    internal DeviceTensor HistogramWeights { get; } // [maxRows, 512] I32 as ulong: and its weights
    internal DeviceTensor Arrivals { get; }        // [maxRows] I32: parts done with the current pass (the last one decides)

    /// <summary>ulongs of a row's select state: key prefix, weight still needed, phase (0 done, 1 top-k, 2 top-p), top-p mass.</summary>
    internal const int SelectStateLongs = 4;

    /// <summary>
    /// Whether some row of the last <see cref="Write"/> filters its candidates (Sample at temperature &gt; 0 with top-k,
    /// top-p or min-p): only then does a run launch the select passes (a decode graph is captured for each value).
    /// </summary>
    public bool AnyFiltered { get; private set; }
    internal DeviceTensor Out { get; }             // [maxRows, 3] I32: token, finite, rank
    internal DeviceTensor OutLogprob { get; }      // [maxRows] F32: logprob of the token
    internal DeviceTensor TopIds { get; }          // [maxRows, MaxLogprobs] I32, by (logprob desc, id asc)
    internal DeviceTensor TopLogprobs { get; }     // [maxRows, MaxLogprobs] F32

    /// <summary>Device bytes of a batch of <paramref name="maxRows"/> rows (with the initial edit capacity).</summary>
    public static long Bytes(int maxRows, int vocab, int editCapacity = 1024)
    {
        int parts = Math.Clamp(((vocab + 3) / 4 + PartQuads - 1) / PartQuads, 1, 64);
        return 4L * maxRows * (IntParams + FloatParams + 2 + 1 + 3 * parts + 2 * SelectStateLongs + 3 * 256 + 1 + OutInts + 1 + 2 * MaxLogprobs)
            + 4L * editCapacity * (EditInts + EditFloats);
    }

    /// <summary>
    /// Uploads the rows of the next run and their edits (row r owns the next rows[r].Edits of <paramref name="edits"/>).
    /// Checks every row first; a bad row throws before anything is written.
    /// </summary>
    public void Write(ReadOnlySpan<SampleRow> rows, ReadOnlySpan<TokenEdit> edits)
    {
        if (rows.Length > MaxRows) throw new ArgumentException($"{rows.Length} rows given, the batch holds {MaxRows}", nameof(rows));
        long editTotal = 0;
        for (int r = 0; r < rows.Length; r++)
        {
            var row = rows[r];
            if (!Enum.IsDefined(row.Mode)) throw Bad(r, $"unknown mode {row.Mode}");
            if (!(row.Temperature >= 0) || float.IsInfinity(row.Temperature)) throw Bad(r, $"temperature must be finite and non-negative, got {row.Temperature}");
            if (!(row.TopP > 0)) throw Bad(r, $"top_p must be positive, got {row.TopP}");
            if (float.IsNaN(row.MinP)) throw Bad(r, "min_p is NaN");
            if (!(row.RepetitionPenalty > 0) || float.IsInfinity(row.RepetitionPenalty)) throw Bad(r, $"repetition penalty must be positive, got {row.RepetitionPenalty}");
            if (!float.IsFinite(row.PresencePenalty) || !float.IsFinite(row.FrequencyPenalty)) throw Bad(r, "presence and frequency penalties must be finite");
            if (row.Logprobs < -1 || row.Logprobs > Math.Min(MaxLogprobs, Vocab)) throw Bad(r, $"logprobs must be in [-1, {Math.Min(MaxLogprobs, Vocab)}], got {row.Logprobs}");
            if (row.Mode == SampleMode.Score && (row.Target < 0 || row.Target >= Vocab)) throw Bad(r, $"target {row.Target} is outside the vocabulary [0, {Vocab})");
            if (row.Edits < 0 || (row.Edits > 0 && row.Mode != SampleMode.Sample)) throw Bad(r, $"only Sample rows take edits, got {row.Edits} on a {row.Mode} row");
            editTotal += row.Edits;
        }
        if (editTotal != edits.Length) throw new ArgumentException($"the rows claim {editTotal} edits, {edits.Length} given", nameof(edits));
        for (int e = 0, r = 0, left = rows.Length > 0 ? rows[0].Edits : 0; e < edits.Length; e++, left--)
        {
            while (left == 0) left = rows[++r].Edits;
            var edit = edits[e];
            if (edit.TokenId < 0 || edit.TokenId >= Vocab) throw new ArgumentException($"edit {e} of row {r} names token {edit.TokenId}, outside [0, {Vocab})", nameof(edits));
            if (float.IsNaN(edit.Bias) || edit.Bias == float.PositiveInfinity) throw new ArgumentException($"edit {e} of row {r} has bias {edit.Bias}", nameof(edits));
            if (edit.OutputCount < 0) throw new ArgumentException($"edit {e} of row {r} has a negative output count", nameof(edits));
        }

        int editStart = 0;
        AnyFiltered = false;
        for (int r = 0; r < rows.Length; r++)
        {
            var row = rows[r];
            AnyFiltered |= row.Mode == SampleMode.Sample && row.Temperature > 0 && ((row.TopK > 0 && row.TopK < Vocab) || row.TopP < 1 || row.MinP > 0);
            var ints = _rowInts.AsSpan(r * IntParams, IntParams);
            ints[PMode] = (int)row.Mode;
            ints[PTopK] = row.TopK > 0 && row.TopK < Vocab ? row.TopK : 0;
            ints[PSeedLo] = (int)row.Seed;
            ints[PSeedHi] = (int)(row.Seed >> 32);
            ints[PSequence] = row.Sequence;
            ints[PPosition] = row.Position;
            ints[PEditStart] = editStart;
            ints[PEditCount] = row.Edits;
            ints[PLogprobs] = row.Logprobs;
            ints[PTarget] = row.Target;
            var floats = _rowFloats.AsSpan(r * FloatParams, FloatParams);
            floats[PTemperature] = row.Temperature;
            floats[PTopP] = row.TopP;
            floats[PMinP] = row.MinP;
            floats[PRepetition] = row.RepetitionPenalty;
            floats[PPresence] = row.PresencePenalty;
            floats[PFrequency] = row.FrequencyPenalty;
            editStart += row.Edits;
        }
        EnsureEdits(edits.Length);
        for (int e = 0; e < edits.Length; e++)
        {
            _editInts[e * EditInts] = edits[e].TokenId;
            _editInts[e * EditInts + 1] = edits[e].OutputCount;
            _editInts[e * EditInts + 2] = edits[e].Seen ? 1 : 0;
            _editFloats[e * EditFloats] = edits[e].Bias; // column 1, the raw logit, is the kernels' scratch
        }
        Rows = rows.Length;
        if (rows.Length == 0) return;
        RowInts.Slice(0, rows.Length).CopyFrom<int>(_rowInts.AsSpan(0, rows.Length * IntParams));
        RowFloats.Slice(0, rows.Length).CopyFrom<float>(_rowFloats.AsSpan(0, rows.Length * FloatParams));
        if (edits.Length == 0) return;
        EditIntsTensor.Slice(0, edits.Length).CopyFrom<int>(_editInts.AsSpan(0, edits.Length * EditInts));
        EditFloatsTensor.Slice(0, edits.Length).CopyFrom<float>(_editFloats.AsSpan(0, edits.Length * EditFloats));
    }

    ArgumentException Bad(int row, string message) => new($"sample row {row}: {message}", "rows");

    void EnsureEdits(int needed)
    {
        int capacity = _editInts.Length / EditInts;
        if (needed <= capacity && EditIntsTensor != null) return;
        int grown = Math.Max(needed, Math.Max(1, capacity * 2));
        EditIntsTensor?.Dispose();
        EditFloatsTensor?.Dispose();
        EditIntsTensor = _device.Zeros(DType.I32, grown, EditInts);
        EditFloatsTensor = _device.Zeros(DType.F32, grown, EditFloats);
        _editInts = new int[grown * EditInts];
        _editFloats = new float[grown * EditFloats];
        if (capacity > 0) Version++;
    }

    /// <summary>Copies the results of the first <paramref name="rows"/> rows of the last run to the host (synchronises).</summary>
    /// <param name="rows">how many rows, from the first</param>
    /// <param name="logprobs">also the logprob arrays (when some row asked for logprobs)</param>
    public void Read(int rows, bool logprobs)
    {
        if (rows < 0 || rows > Rows) throw new ArgumentOutOfRangeException(nameof(rows), rows, $"the last run had {Rows} rows");
        if (rows == 0) return;
        Out.Slice(0, rows).CopyTo<int>(_outInts);
        if (!logprobs) return;
        OutLogprob.Slice(0, rows).CopyTo<float>(_outLogprob);
        TopIds.Slice(0, rows).CopyTo<int>(_topIds);
        TopLogprobs.Slice(0, rows).CopyTo<float>(_topLogprobs);
    }

    /// <summary>The row's token: sampled, the argmax, or a Score row's target (after <see cref="Read"/>).</summary>
    public int Token(int row) => _outInts[row * OutInts + OToken];

    /// <summary>Whether the row's raw logits were all finite (no NaN, no ±∞): a diverged row has no meaningful token.</summary>
    public bool Finite(int row) => _outInts[row * OutInts + OFinite] != 0;

    /// <summary>log-softmax of the raw logits at the row's token (finite rows with logprobs ≥ 0).</summary>
    public float Logprob(int row) => _outLogprob[row];

    /// <summary>1 + the number of tokens with a strictly larger raw logit than the row's token.</summary>
    public int Rank(int row) => _outInts[row * OutInts + ORank];

    /// <summary>The row's top n ids by (logprob desc, id asc), n = its Logprobs.</summary>
    public ReadOnlySpan<int> TopIdsOf(int row, int n) => _topIds.AsSpan(row * MaxLogprobs, n);

    /// <summary>Logprobs of <see cref="TopIdsOf"/>.</summary>
    public ReadOnlySpan<float> TopLogprobsOf(int row, int n) => _topLogprobs.AsSpan(row * MaxLogprobs, n);

    /// <summary>Frees the device buffers.</summary>
    public void Dispose()
    {
        RowInts.Dispose();
        RowFloats.Dispose();
        EditIntsTensor.Dispose();
        EditFloatsTensor.Dispose();
        Thresholds.Dispose();
        Maxima.Dispose();
        PartialValues.Dispose();
        PartialIndices.Dispose();
        PartialNonFinite.Dispose();
        SelectState.Dispose();
        HistogramCounts.Dispose();
        HistogramWeights.Dispose();
        Arrivals.Dispose();
        Out.Dispose();
        OutLogprob.Dispose();
        TopIds.Dispose();
        TopLogprobs.Dispose();
    }
}
