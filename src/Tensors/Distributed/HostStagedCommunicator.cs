using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Distributed;

/// <summary>
/// A tensor-parallel group whose ranks are devices of this process, one thread per rank. Each collective stages the
/// ranks' tensors through host memory: every rank copies its tensor to its own host buffer, all meet at a barrier, and
/// each rank then computes the result from all the buffers in rank order (rank 0 + rank 1 + …) and copies it back to
/// its device. Every rank computes the same sums in the same order, so every rank gets the same bits, run after run.
/// Device-generic (it only copies to and from the host), so a pair of CUDA devices can use it until a device-to-device
/// or NCCL communicator replaces it; so far it has run on CPU devices only.
///
/// The host buffers alternate between two sets, collective by collective: a rank cannot get two collectives ahead of
/// another (the next barrier waits for it), so the set it writes is never the one a slower rank still reads, and one
/// barrier per collective is enough.
/// </summary>
public sealed class HostStagedCommunicator : ICommunicator
{
    readonly Group _group;
    int _collectives; // collectives this rank has entered: picks the host-buffer set

    HostStagedCommunicator(Group group, int rank)
    {
        _group = group;
        Rank = rank;
    }

    /// <summary>One handle per rank of a new group of <paramref name="worldSize"/> ranks (positive).</summary>
    public static IReadOnlyList<HostStagedCommunicator> CreateGroup(int worldSize)
    {
        if (worldSize <= 0) throw new ArgumentOutOfRangeException(nameof(worldSize), worldSize, "a group needs at least one rank");
        var group = new Group(worldSize);
        return Enumerable.Range(0, worldSize).Select(r => new HostStagedCommunicator(group, r)).ToArray();
    }

    /// <inheritdoc/>
    public int Rank { get; }

    /// <inheritdoc/>
    public int WorldSize => _group.WorldSize;

    /// <summary>
    /// Breaks the group after a rank failed: ranks waiting in a collective, and every later collective, throw
    /// <see cref="OperationCanceledException"/> instead of waiting for a rank that will never come.
    /// </summary>
    public void Abort() => _group.Abort();

    /// <inheritdoc/>
    public void AllReduceSum(DeviceTensor tensor)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        if (tensor.DType != DType.F32) throw new ArgumentException($"all-reduce takes F32 tensors, got {tensor.DType}", nameof(tensor));
        int n = checked((int)tensor.Length);
        var staged = Stage(tensor, n, rows: 1);
        var sum = _group.Result(Rank, n);
        staged[0].AsSpan(0, n).CopyTo(sum);
        for (int r = 1; r < WorldSize; r++) TensorPrimitives.Add(sum, staged[r].AsSpan(0, n), sum);
        tensor.CopyFrom<float>(sum);
    }

    /// <inheritdoc/>
    public void AllGather(DeviceTensor output, DeviceTensor input)
    {
        ArgumentNullException.ThrowIfNull(output);
        ArgumentNullException.ThrowIfNull(input);
        if (input.DType != DType.F32 || output.DType != DType.F32) throw new ArgumentException($"all-gather takes F32 tensors, got {input.DType} and {output.DType}", nameof(input));
        if (input.Rank != 2) throw new ArgumentException($"all-gather takes [T, n] inputs, got {input.ShapeString}", nameof(input));
        int rows = input.Dim(0), n = input.Dim(1);
        Check.Shape(output, nameof(output), rows, WorldSize * n);
        var staged = Stage(input, rows * n, rows);
        var gathered = _group.Result(Rank, checked(rows * n * WorldSize));
        for (int t = 0; t < rows; t++)
            for (int r = 0; r < WorldSize; r++)
                staged[r].AsSpan(t * n, n).CopyTo(gathered.Slice((t * WorldSize + r) * n, n));
        output.CopyFrom<float>(gathered);
    }

    /// <summary>Copies this rank's tensor to its host buffer, waits for every rank, and returns all ranks' buffers.</summary>
    float[][] Stage(DeviceTensor tensor, int length, int rows)
    {
        var set = _group.Sets[_collectives++ & 1];
        if (set.Buffers[Rank].Length < length) set.Buffers[Rank] = new float[length];
        tensor.CopyTo<float>(set.Buffers[Rank].AsSpan(0, length));
        set.Lengths[Rank] = (length, rows);
        _group.Meet();
        for (int r = 0; r < WorldSize; r++)
            if (set.Lengths[r] != set.Lengths[0])
                throw new InvalidOperationException(
                    $"rank {r} entered the collective with {set.Lengths[r].Length} elements in {set.Lengths[r].Rows} rows, rank 0 with {set.Lengths[0].Length} in {set.Lengths[0].Rows}");
        return set.Buffers;
    }

    /// <summary>The state the ranks share: the barrier and two sets of host buffers.</summary>
    sealed class Group(int worldSize)
    {
        readonly Barrier _barrier = new(worldSize);
        readonly CancellationTokenSource _aborted = new();
        readonly float[][] _results = Enumerable.Range(0, worldSize).Select(_ => Array.Empty<float>()).ToArray();

        public int WorldSize { get; } = worldSize;

        public (float[][] Buffers, (int Length, int Rows)[] Lengths)[] Sets { get; } =
        [
            (Enumerable.Range(0, worldSize).Select(_ => Array.Empty<float>()).ToArray(), new (int, int)[worldSize]),
            (Enumerable.Range(0, worldSize).Select(_ => Array.Empty<float>()).ToArray(), new (int, int)[worldSize]),
        ];

        /// <summary>A rank's own result buffer of at least <paramref name="length"/> floats (only that rank touches it).</summary>
        public Span<float> Result(int rank, int length)
        {
            if (_results[rank].Length < length) _results[rank] = new float[length];
            return _results[rank].AsSpan(0, length);
        }

        public void Meet()
        {
            if (WorldSize == 1) return;
            _barrier.SignalAndWait(_aborted.Token);
        }

        public void Abort() => _aborted.Cancel();
    }
}
