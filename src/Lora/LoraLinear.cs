using LoraEngine.Models.Llama;
using LoraEngine.Tensors;
using LoraEngine.Tensors.Kernels;

namespace LoraEngine.Lora;

/// <summary>
/// Wraps a base linear and adds each token's adapter delta: y = W·x, then y[t] += B_s·(A_s·x[t]) with
/// s = slot[t] (-1: none) and the scale folded into B_s. Owns slot-stacked A [slots, maxRank, in] and
/// B [slots, out, maxRank], allocated once and zeroed (vLLM's create_lora_weights / set_lora / reset_lora / apply).
/// Under tensor parallelism the base is one rank's share of the projection and the slots hold that rank's share of
/// every adapter (<see cref="LoraShard"/>); <see cref="SetSlot"/> takes the whole adapter and keeps its share.
/// Linears sharing an input (q/k/v, gate/up) add their deltas together (<see cref="AddDeltas"/>), as vLLM's merged
/// LoRA layers hand punica all their slices at once. Slots whose A is a member of a <see cref="StackedLoraA"/> (the
/// engine's, <see cref="LoraLayers"/>) shrink as one more product of the base linears' launch — every slot's A·x for every
/// token, no launch of its own — and expand from each token's own slot's columns.
/// </summary>
public sealed class LoraLinear : ILinear, ISharedInputGroup, IDisposable
{
    readonly DeviceTensor _shrinkBuffer; // [rows ≥ maxTokens, maxRank] F32, shared by all LoRA layers of a model
    readonly StackedLoraA? _stack;       // the stacked A this linear's A is member _member of; null: the shrink kernels
    readonly int _member;
    readonly DeviceTensor? _localShrink; // [maxTokens, maxRank / ranks] F32: this rank's shrink before the all-gather (fully sharded)
    readonly int _aRowStart, _inStart, _outStart; // where this rank's share starts in the adapter's A rows, A columns, B rows
    readonly bool _reduces; // row-parallel, fully sharded: the partial shrinks are all-reduced, B's rows expand into y's columns from _outStart

    /// <summary>Wraps <paramref name="baseLayer"/> and allocates its zeroed slots (vLLM's create_lora_weights).</summary>
    /// <param name="baseLayer">the projection wrapped; its InFeatures and OutFeatures size the slots</param>
    /// <param name="maxSlots">slots (positive)</param>
    /// <param name="maxRank">the largest rank a slot holds (positive)</param>
    /// <param name="loraDType">F32, F16 or BF16: the dtype A and B are stored in</param>
    /// <param name="device">the device the slots live on</param>
    /// <param name="shrinkBuffer">
    /// [rows, maxRank] F32 scratch for A·x, shared by every LoRA layer of a model: rows ≥ the step's tokens T, and
    /// n·T for n linears to add their deltas together (<see cref="AddDeltas"/>; <see cref="LoraLayers"/> gives
    /// <see cref="LoraOps.MaxGroup"/> × maxTokens)
    /// </param>
    public LoraLinear(ILinear baseLayer, int maxSlots, int maxRank, DType loraDType, ComputeDevice device, DeviceTensor shrinkBuffer)
        : this(baseLayer, maxSlots, maxRank, loraDType, device, shrinkBuffer, shard: null, localShrinkBuffer: null)
    {
    }

    /// <summary>Wraps one tensor-parallel rank's share of a projection and allocates the slots of its share of the adapters.</summary>
    /// <param name="baseLayer">this rank's share of the projection (its output rows, or its input columns when row-parallel)</param>
    /// <param name="maxSlots">slots (positive)</param>
    /// <param name="maxRank">the largest rank a slot holds (positive; a multiple of the ranks when fully sharded)</param>
    /// <param name="loraDType">F32, F16 or BF16: the dtype A and B are stored in</param>
    /// <param name="device">the device the slots live on</param>
    /// <param name="shrinkBuffer">[rows ≥ maxTokens, maxRank] F32 scratch for A·x, shared by every LoRA layer of the rank (as in the other constructor)</param>
    /// <param name="shard">which share this rank holds; null: the whole adapter (one device)</param>
    /// <param name="localShrinkBuffer">[maxTokens, maxRank / ranks] F32 scratch of this rank's shrink, when <see cref="LoraShard.GathersShrink"/></param>
    public LoraLinear(ILinear baseLayer, int maxSlots, int maxRank, DType loraDType, ComputeDevice device, DeviceTensor shrinkBuffer,
        LoraShard? shard, DeviceTensor? localShrinkBuffer)
        : this(baseLayer, maxSlots, maxRank, loraDType, device, shrinkBuffer, shard, localShrinkBuffer, stack: null, member: 0)
    {
    }

    /// <summary>
    /// Wraps <paramref name="baseLayer"/> on one device with its A member <paramref name="member"/> of
    /// <paramref name="stack"/> (which owns it; its slots, rank and dtype must be these).
    /// </summary>
    internal LoraLinear(ILinear baseLayer, int maxSlots, int maxRank, DType loraDType, ComputeDevice device, DeviceTensor shrinkBuffer,
        StackedLoraA stack, int member)
        : this(baseLayer, maxSlots, maxRank, loraDType, device, shrinkBuffer, shard: null, localShrinkBuffer: null, stack, member)
    {
    }

    LoraLinear(ILinear baseLayer, int maxSlots, int maxRank, DType loraDType, ComputeDevice device, DeviceTensor shrinkBuffer,
        LoraShard? shard, DeviceTensor? localShrinkBuffer, StackedLoraA? stack, int member)
    {
        ArgumentNullException.ThrowIfNull(baseLayer);
        if (maxSlots <= 0) throw new ArgumentOutOfRangeException(nameof(maxSlots), maxSlots, "must be positive");
        if (maxRank <= 0) throw new ArgumentOutOfRangeException(nameof(maxRank), maxRank, "must be positive");
        if (!loraDType.IsFloat()) throw new ArgumentException($"LoRA dtype must be a float type, got {loraDType}", nameof(loraDType));
        int ranks = shard?.Communicator.WorldSize ?? 1, me = shard?.Communicator.Rank ?? 0;
        bool gathers = shard is { GathersShrink: true }, reduces = shard is { ReducesShrink: true };
        if (gathers && maxRank % ranks != 0)
            throw new ArgumentOutOfRangeException(nameof(maxRank), maxRank, $"fully sharded LoRA splits max_lora_rank ({maxRank}) over {ranks} ranks: it must be a multiple of {ranks}");
        if (reduces && baseLayer.OutFeatures % ranks != 0)
            throw new ArgumentException($"fully sharded LoRA splits B's {baseLayer.OutFeatures} output rows over {ranks} ranks: they must be a multiple of {ranks}", nameof(baseLayer));
        if (gathers && localShrinkBuffer is null) throw new ArgumentNullException(nameof(localShrinkBuffer), "a fully sharded column-parallel layer needs its local shrink buffer");
        Base = baseLayer;
        MaxSlots = maxSlots;
        MaxRank = maxRank;
        Shard = shard;
        _shrinkBuffer = shrinkBuffer;
        _localShrink = gathers ? localShrinkBuffer : null;
        bool row = shard is { RowParallel: true };
        FullInFeatures = row ? baseLayer.InFeatures * ranks : baseLayer.InFeatures;
        FullOutFeatures = shard is null || row ? baseLayer.OutFeatures : baseLayer.OutFeatures * ranks;
        int aRows = gathers ? maxRank / ranks : maxRank;
        _aRowStart = gathers ? me * aRows : 0;
        int bRows = reduces ? baseLayer.OutFeatures / ranks : baseLayer.OutFeatures;
        _inStart = row ? me * baseLayer.InFeatures : 0;
        _outStart = shard is null || row && !reduces ? 0 : me * bRows;
        _reduces = reduces;
        _stack = stack;
        _member = member;
        A = stack?.Member(member, maxSlots, maxRank, baseLayer.InFeatures, loraDType) ?? device.Zeros(loraDType, maxSlots, aRows, baseLayer.InFeatures);
        try
        {
            B = device.Zeros(loraDType, maxSlots, bRows, maxRank);
        }
        catch
        {
            A.Dispose();
            throw;
        }
    }

    /// <summary>The wrapped projection (vLLM's base_layer).</summary>
    public ILinear Base { get; }

    /// <summary>Slots A and B hold.</summary>
    public int MaxSlots { get; }

    /// <summary>Rank columns of B of every slot, and rows of A (of which a fully sharded rank holds MaxRank / ranks).</summary>
    public int MaxRank { get; }

    /// <summary>
    /// [slots, maxRank, in] LoRA A of every slot, rank rows past the adapter's rank are zero. Under tensor parallelism
    /// this rank's share: its input columns (row-parallel), its maxRank / ranks rows (fully sharded column-parallel).
    /// </summary>
    public DeviceTensor A { get; }

    /// <summary>
    /// [slots, out, maxRank] scale·B of every slot, rank columns past the adapter's rank are zero; under tensor
    /// parallelism a column-parallel rank's output rows only, and a fully sharded row-parallel rank's share of the rows.
    /// </summary>
    public DeviceTensor B { get; }

    /// <summary>Which share of the adapters this rank holds; null on one device.</summary>
    public LoraShard? Shard { get; }

    /// <summary>Input width of the whole projection (the adapter's A columns).</summary>
    public int FullInFeatures { get; }

    /// <summary>Output width of the whole projection (the adapter's B rows).</summary>
    public int FullOutFeatures { get; }

    /// <inheritdoc/>
    public int InFeatures => Base.InFeatures;

    /// <inheritdoc/>
    public int OutFeatures => Base.OutFeatures;

    /// <summary>Bytes of the slot buffers of one projection: slots × maxRank × (in + out) × dtype size.</summary>
    public static long SlotBytes(int maxSlots, int maxRank, int inFeatures, int outFeatures, DType dtype) =>
        (long)maxSlots * maxRank * (inFeatures + outFeatures) * dtype.Size();

    /// <summary>
    /// Copies an adapter's weights (the whole projection's) into <paramref name="slot"/>: A [rank, in] padded to maxRank
    /// rows, B [out, rank] scaled by <paramref name="scale"/> and padded to maxRank columns; under tensor parallelism
    /// only this rank's share of them (vLLM's slice_lora_a / slice_lora_b).
    /// </summary>
    public void SetSlot(int slot, int rank, float scale, ReadOnlySpan<float> a, ReadOnlySpan<float> b)
    {
        CheckSlot(slot);
        if (rank <= 0 || rank > MaxRank) throw new ArgumentOutOfRangeException(nameof(rank), rank, $"rank must be in 1..{MaxRank}");
        if (a.Length != rank * FullInFeatures) throw new ArgumentException($"A holds {a.Length} values, expected [{rank}, {FullInFeatures}]", nameof(a));
        if (b.Length != FullOutFeatures * rank) throw new ArgumentException($"B holds {b.Length} values, expected [{FullOutFeatures}, {rank}]", nameof(b));

        int aRows = A.Dim(1);
        var paddedA = new float[aRows * InFeatures];
        for (int r = 0; r < aRows && _aRowStart + r < rank; r++)
            a.Slice((_aRowStart + r) * FullInFeatures + _inStart, InFeatures).CopyTo(paddedA.AsSpan(r * InFeatures));
        int bRows = B.Dim(1);
        var paddedB = new float[bRows * MaxRank];
        for (int o = 0; o < bRows; o++)
            for (int r = 0; r < rank; r++)
                paddedB[o * MaxRank + r] = scale * b[(_outStart + o) * rank + r];
        Upload(A.Slice(slot, 1), paddedA);
        Upload(B.Slice(slot, 1), paddedB);
    }

    /// <summary>Zeroes a slot: tokens mapped to it get no delta from this projection.</summary>
    public void ResetSlot(int slot)
    {
        CheckSlot(slot);
        A.Slice(slot, 1).Clear();
        B.Slice(slot, 1).Clear();
    }

    /// <summary>
    /// y = base(x), then each token's adapter delta (<see cref="AddDelta"/>); with a stacked A, the base product and every
    /// slot's shrink in one launch.
    /// </summary>
    /// <inheritdoc cref="ILinear.Forward"/>
    public void Forward(DeviceTensor y, DeviceTensor x, StepBatch batch) => ForwardOrPend(y, x, batch, []);

    /// <summary>
    /// <see cref="Forward"/>, the expand of a stacked shrink left to the op that reads y next where that op can add it in
    /// its own launch (<see cref="LoraOps.Fuses"/>).
    /// </summary>
    /// <inheritdoc cref="ILinear.ForwardPending"/>
    public PendingExpand? ForwardPending(DeviceTensor y, DeviceTensor x, StepBatch batch)
    {
        var pending = new PendingExpand?[1];
        ForwardOrPend(y, x, batch, pending);
        return pending[0];
    }

    void ForwardOrPend(DeviceTensor y, DeviceTensor x, StepBatch batch, Span<PendingExpand?> pending)
    {
        if (_stack != null && batch.LinearContext is LoraBatchMapping { AnyAdapter: true } mapping && StackedShrinks(batch.NumTokens, StackedRows) is { } shrinks)
        {
            StackedDeltas(x, batch, mapping, [(y, this)], OwnStackedA, shrinks, withBase: true, pending);
            return;
        }
        Base.Forward(y, x, batch);
        AddDelta(y, x, batch);
    }

    /// <summary>
    /// y_i = linear_i(x) for LoRA linears sharing x, each exactly as its <see cref="Forward"/> gives it: the base products in
    /// one launch — with the members' stacked A beside them when they are, in order, the members of one
    /// <see cref="StackedLoraA"/> — then the deltas together (<see cref="AddDeltas"/>). False, with nothing written, unless
    /// the first linear is a LoRA linear.
    /// </summary>
    /// <param name="x">[T, in] F32</param>
    /// <param name="batch">the step's metadata (its <see cref="StepBatch.LinearContext"/> the <see cref="LoraBatchMapping"/>)</param>
    /// <param name="outputs">(y_i [T, out_i] F32, linear_i)</param>
    public static bool ForwardGroup(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs) =>
        ForwardGroup(x, batch, outputs, []);

    /// <summary>
    /// <see cref="ForwardGroup(DeviceTensor, StepBatch, ReadOnlySpan{ValueTuple{DeviceTensor, ILinear}})"/>, the expands of a
    /// whole stack left in <paramref name="pending"/> (one entry per output) where the ops that read the outputs next can
    /// add them in their own launches (<see cref="LoraOps.Fuses"/>); entries left null need nothing more.
    /// </summary>
    /// <param name="x">[T, in] F32</param>
    /// <param name="batch">the step's metadata (its <see cref="StepBatch.LinearContext"/> the <see cref="LoraBatchMapping"/>)</param>
    /// <param name="outputs">(y_i [T, out_i] F32, linear_i)</param>
    /// <param name="pending">empty (nothing left pending) or one entry per output, null on entry</param>
    public static bool ForwardGroup(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs, Span<PendingExpand?> pending)
    {
        int n = outputs.Length;
        if (n == 0 || outputs[0].Linear is not LoraLinear first) return false;
        if (first._stack is { } stack && IsWholeStack(outputs, stack) && batch.LinearContext is LoraBatchMapping { AnyAdapter: true } mapping
            && first.StackedShrinks(batch.NumTokens, stack.Weight.Dim(0)) is { } shrinks)
        {
            StackedDeltas(x, batch, mapping, outputs, stack.Weight, shrinks, withBase: true, pending);
            return true;
        }
        var products = new (DeviceTensor Y, DeviceTensor W)[n];
        for (int i = 0; i < n; i++) products[i] = (outputs[i].Y, outputs[i].Linear.BaseWeight);
        x.Device.MatMul.LinearGroup(x, products);
        if (!AddDeltas(x, batch, outputs))
            foreach (var (y, linear) in outputs) linear.AddDelta(y, x, batch);
        return true;
    }

    /// <inheritdoc/>
    bool ISharedInputGroup.TryForward(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs) =>
        ForwardGroup(x, batch, outputs);

    /// <inheritdoc/>
    bool ISharedInputGroup.TryForwardPending(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs, Span<PendingExpand?> pending) =>
        ForwardGroup(x, batch, outputs, pending);

    /// <summary>The wrapped projection's base weight: a fused launch computes W·x, then <see cref="AddDelta"/> adds the adapters.</summary>
    public DeviceTensor BaseWeight => Base.BaseWeight;

    /// <summary>
    /// y[t] += B_s·(A_s·x[t]), s = slot[t] (after the base layer's own delta, if it has one). Fully sharded, a
    /// column-parallel rank shrinks with its rows of A and the ranks all-gather the shrink before the expand; a
    /// row-parallel rank all-reduces its partial shrink and expands into its own columns of y. Every rank takes the
    /// same path for the same steps, as the collectives need.
    /// </summary>
    public void AddDelta(DeviceTensor y, DeviceTensor x, StepBatch batch)
    {
        Base.AddDelta(y, x, batch);
        if (batch.LinearContext is not LoraBatchMapping { AnyAdapter: true } mapping) return;
        if (_stack != null && StackedShrinks(batch.NumTokens, StackedRows) is { } shrinks)
        {
            StackedDeltas(x, batch, mapping, [(y, this)], OwnStackedA, shrinks, withBase: false, pending: []);
            return;
        }
        var (lora, slots) = (y.Device.Lora, mapping.TokenSlots);
        var buffer = _shrinkBuffer.Slice(0, batch.NumTokens);                 // [T, maxRank]
        if (_localShrink is { } localShrink)
        {
            var local = localShrink.Slice(0, batch.NumTokens);                // [T, maxRank / ranks]
            lora.Shrink(local, x, A, slots);
            Shard!.Communicator.AllGather(buffer, local);                      // rank r's rows of A · x at r · maxRank / ranks
            lora.Expand(y, buffer, B, slots);
        }
        else if (_reduces)
        {
            lora.Shrink(buffer, x, A, slots);                                  // A_r · x_r over this rank's inputs
            Shard!.Communicator.AllReduceSum(buffer);                          // A · x
            lora.Expand(y, buffer, B, slots, outputOffset: _outStart);         // into this rank's columns of y only
        }
        else
        {
            lora.Shrink(buffer, x, A, slots);
            lora.Expand(y, buffer, B, slots);
        }
    }

    /// <summary>
    /// y_i[t] += B_i,s·(A_i,s·x[t]), s = slot[t], for LoRA linears sharing the input x (q/k/v, gate/up), after each base
    /// layer's own delta: one grouped shrink (member i into rows [i·T, (i+1)·T) of the shrink buffer) and one grouped
    /// expand, with exactly the values <see cref="AddDelta"/> gives each. Grouped only when every linear is a LoraLinear
    /// of x's device without a tensor-parallel share, all sharing one shrink buffer with room for each; otherwise nothing
    /// is added and the result is false.
    /// </summary>
    /// <param name="x">[T, in] F32</param>
    /// <param name="batch">the step's metadata (its <see cref="StepBatch.LinearContext"/> the <see cref="LoraBatchMapping"/>)</param>
    /// <param name="outputs">(y_i [T, out_i] F32 holding the base product, linear_i), at most <see cref="LoraOps.MaxGroup"/></param>
    public static bool AddDeltas(DeviceTensor x, StepBatch batch, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs)
    {
        int n = outputs.Length, tokens = batch.NumTokens;
        if (n is 0 or > LoraOps.MaxGroup || outputs[0].Linear is not LoraLinear first) return false;
        foreach (var (_, linear) in outputs)
            if (linear is not LoraLinear { Shard: null } lora || !ReferenceEquals(lora._shrinkBuffer, first._shrinkBuffer) || lora.A.Device != x.Device
                || (lora._stack == null) != (first._stack == null))
                return false;
        if ((long)n * tokens > first._shrinkBuffer.Dim(0)) return false;
        // Stacked members that are not one whole stack: each adds its own delta.
        var stacked = first._stack is { } stack && IsWholeStack(outputs, stack) ? first.StackedShrinks(tokens, stack.Weight.Dim(0)) : null;
        if (first._stack != null && stacked == null) return false;

        foreach (var (y, linear) in outputs) ((LoraLinear)linear).Base.AddDelta(y, x, batch);
        if (batch.LinearContext is not LoraBatchMapping { AnyAdapter: true } mapping) return true;
        if (stacked != null)
        {
            StackedDeltas(x, batch, mapping, outputs, first._stack!.Weight, stacked, withBase: false, pending: []);
            return true;
        }
        var shrinks = new (DeviceTensor Buffer, DeviceTensor A)[n];
        var expands = new (DeviceTensor Y, DeviceTensor Buffer, DeviceTensor B)[n];
        for (int i = 0; i < n; i++)
        {
            var lora = (LoraLinear)outputs[i].Linear;
            var buffer = first._shrinkBuffer.Slice(i * tokens, tokens);      // [T, maxRank], member i's own rows
            shrinks[i] = (buffer, lora.A);
            expands[i] = (outputs[i].Y, buffer, lora.B);
        }
        var (ops, slots) = (x.Device.Lora, mapping.TokenSlots);
        ops.ShrinkGroup(x, slots, shrinks);
        ops.ExpandGroup(slots, expands);
        return true;
    }

    /// <summary>
    /// The stacked path of the entries above: shrinks [T, Σ slots · maxRank] = <paramref name="stackedA"/> · x, every
    /// slot's A·x (in the base products' launch when <paramref name="withBase"/>, each base layer's own delta after it), then
    /// the members' expands from each token's own slot's columns — or, where <paramref name="pending"/> has an entry for
    /// every member and the ops reading the outputs can add every member's expand in their own launches, those expands.
    /// </summary>
    static void StackedDeltas(DeviceTensor x, StepBatch batch, LoraBatchMapping mapping, ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs,
        DeviceTensor stackedA, DeviceTensor shrinks, bool withBase, Span<PendingExpand?> pending)
    {
        int n = outputs.Length, bases = withBase ? n : 0;
        var products = new (DeviceTensor Y, DeviceTensor W)[bases + 1];
        for (int i = 0; i < bases; i++) products[i] = (outputs[i].Y, outputs[i].Linear.BaseWeight);
        products[bases] = (shrinks, stackedA);
        x.Device.MatMul.LinearGroup(x, products);
        var expands = new (DeviceTensor Y, DeviceTensor B)[n];
        for (int i = 0; i < n; i++)
        {
            var lora = (LoraLinear)outputs[i].Linear;
            if (withBase) lora.Base.AddDelta(outputs[i].Y, x, batch);
            expands[i] = (outputs[i].Y, lora.B);
        }
        if (pending.Length == n && Pend(mapping.TokenSlots, shrinks, expands, pending)) return;
        x.Device.Lora.ExpandStacked(mapping.TokenSlots, shrinks, expands);
    }

    /// <summary>Every member's expand as a <see cref="PendingExpand"/>, if the ops reading the outputs add each in their own launch; else false, nothing set.</summary>
    static bool Pend(DeviceTensor tokenSlots, DeviceTensor shrinks, ReadOnlySpan<(DeviceTensor Y, DeviceTensor B)> expands, Span<PendingExpand?> pending)
    {
        var lora = shrinks.Device.Lora;
        var members = new PendingExpand[expands.Length];
        for (int i = 0, column = 0; i < expands.Length; column += LoraOps.StackedColumns(expands[i].B), i++)
        {
            members[i] = new PendingExpand(tokenSlots, shrinks, expands[i].B, column);
            if (!lora.Fuses(expands[i].Y, members[i])) return false;
        }
        members.CopyTo(pending);
        return true;
    }

    /// <summary>Rows of this linear's stacked A: slots × maxRank.</summary>
    int StackedRows => MaxSlots * MaxRank;

    /// <summary>This linear's own rows of its stacked A, [slots · maxRank, in]: A as one weight.</summary>
    DeviceTensor OwnStackedA => A.Reshape(StackedRows, InFeatures);

    /// <summary>Whether the linears are, in order, every member of <paramref name="stack"/>.</summary>
    static bool IsWholeStack(ReadOnlySpan<(DeviceTensor Y, ILinear Linear)> outputs, StackedLoraA stack)
    {
        if (outputs.Length != stack.Members) return false;
        for (int i = 0; i < outputs.Length; i++)
            if (outputs[i].Linear is not LoraLinear lora || !ReferenceEquals(lora._stack, stack) || lora._member != i) return false;
        return true;
    }

    /// <summary>
    /// [tokens, columns] F32 at the start of the shrink buffer for stacked shrinks, or null when the buffer has no room
    /// for <see cref="LoraOps.MaxGroup"/> stacked linears' shrinks of this many tokens — the same test alone and in a
    /// group, so both take the same path and give the same bits.
    /// </summary>
    DeviceTensor? StackedShrinks(int tokens, int columns)
    {
        long room = (long)tokens * LoraOps.MaxGroup * StackedRows;
        if (room > _shrinkBuffer.Length) return null;
        return _shrinkBuffer.Reshape((int)_shrinkBuffer.Length).Slice(0, tokens * columns).Reshape(tokens, columns);
    }

    static void Upload(DeviceTensor slotView, float[] values)
    {
        if (slotView.DType == DType.F32) slotView.CopyFrom<float>(values);
        else slotView.CopyFrom<ushort>(HalfBits.FromFloat(slotView.DType, values));
    }

    void CheckSlot(int slot)
    {
        if (slot < 0 || slot >= MaxSlots) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"slot must be in 0..{MaxSlots - 1}");
    }

    /// <summary>Frees the slots and the wrapped projection.</summary>
    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        (Base as IDisposable)?.Dispose();
    }
}
