using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Runtime;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Batched LoRA for a mixed batch (vLLM's punica shrink/expand): each token uses the adapter in its own slot,
/// all tokens in one launch. Slot-stacked A [slots, maxRank, in] and B [slots, out, maxRank], rank zero-padded.
/// Up to <see cref="MaxGroup"/> projections that share an input (q/k/v, gate/up) shrink in one launch and expand in one
/// launch, as vLLM's merged layers hand punica several slices. The CPU device overrides the launches with host code.
/// </summary>
/// <remarks>
/// A member of a grouped launch is computed by the same code as alone, and a token's sums run in an order fixed by the
/// shapes (in, rank) only: its result does not depend on the batch, the other tokens or the other members.
/// BF16 weights with rows of whole 16-byte units take the wide kernels (8 weights per load); other weights, widths
/// and unaligned views take the scalar kernels, generic over the weight decoder.
/// </remarks>
public partial class LoraOps
{
    /// <summary>The most projections one grouped shrink or expand takes (q/k/v).</summary>
    public const int MaxGroup = 3;

    const int ShrinkThreads = 256;
    const int ShrinkWarps = ShrinkThreads / 32;
    const int RowsPerGroup = 4; // rank rows of A one shrink group computes: each thread holds four partial sums

    readonly ComputeDevice _device;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<F4>, ArrayView<int>, LoraSegments<ShrinkSegment<U4>>, int> _shrinkBf16x8;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<float>>, int> _shrinkF32;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<ushort>>, int> _shrinkBf16;
    readonly Action<AcceleratorStream, KernelConfig, ArrayView<float>, ArrayView<int>, LoraSegments<ShrinkSegment<ushort>>, int> _shrinkF16;
    readonly Action<AcceleratorStream, Index1D, ArrayView<int>, LoraSegments<ExpandSegment<U4, F4>>, int> _expandBf16x8;
    readonly Action<AcceleratorStream, Index1D, ArrayView<int>, LoraSegments<ExpandSegment<float, float>>, int> _expandF32;
    readonly Action<AcceleratorStream, Index1D, ArrayView<int>, LoraSegments<ExpandSegment<ushort, float>>, int> _expandBf16;
    readonly Action<AcceleratorStream, Index1D, ArrayView<int>, LoraSegments<ExpandSegment<ushort, float>>, int> _expandF16;

    /// <summary>One member's shape: tokens, and the slots, rank, in and out widths of its weights.</summary>
    internal struct LoraShape
    {
        public int Tokens, Slots, Rank, In, Out;
        public int YStride, YOffset; // expand: y's row width and the first column written (Out and 0 but for a column range)
        public int UStride, UBase, USlot; // expand: the shrink's row width, a member's first column, columns between slots (Rank, 0, 0 but for a stacked shrink)
    }

    internal LoraOps(ComputeDevice device)
    {
        _device = device;
        var acc = device.Accelerator;
        (_shrinkBf16x8, _shrinkF32, _shrinkBf16, _shrinkF16) = device.UsesGroupLanes ? LoadShrinks<GroupLanes>(device) : LoadShrinks<WarpLanes>(device);
        _expandBf16x8 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, LoraSegments<ExpandSegment<U4, F4>>, int>(ExpandBf16x8Kernel));
        _expandF32 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, LoraSegments<ExpandSegment<float, float>>, int>(ExpandKernel<float, F32Decoder>));
        _expandBf16 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, LoraSegments<ExpandSegment<ushort, float>>, int>(ExpandKernel<ushort, Bf16Decoder>));
        _expandF16 = device.Serialized(acc.LoadAutoGroupedKernel<Index1D, ArrayView<int>, LoraSegments<ExpandSegment<ushort, float>>, int>(ExpandKernel<ushort, F16Decoder>));
    }

    /// <summary>buffer[t, r] = A[slot[t], r, :] · x[t, :]; zero rows for slot −1 (or out of range).</summary>
    /// <param name="buffer">[tokens, maxRank] F32</param>
    /// <param name="x">[tokens, in] F32</param>
    /// <param name="a">[slots, maxRank, in] F32/F16/BF16</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    public void Shrink(DeviceTensor buffer, DeviceTensor x, DeviceTensor a, DeviceTensor tokenSlots) => ShrinkGroup(x, tokenSlots, [(buffer, a)]);

    /// <summary>
    /// buffer_i[t, r] = A_i[slot[t], r, :] · x[t, :] for up to <see cref="MaxGroup"/> projections sharing x: one launch
    /// when their weights take the same kernel, else one each. Each buffer_i gets exactly the values
    /// <see cref="Shrink"/> would give it.
    /// </summary>
    /// <param name="x">[tokens, in] F32</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    /// <param name="outputs">(buffer_i [tokens, maxRank_i] F32, A_i [slots_i, maxRank_i, in] F32/F16/BF16); buffers must not overlap</param>
    public void ShrinkGroup(DeviceTensor x, DeviceTensor tokenSlots, params ReadOnlySpan<(DeviceTensor Buffer, DeviceTensor A)> outputs)
    {
        CheckGroupSize(outputs.Length, nameof(outputs));
        Span<LoraShape> shapes = stackalloc LoraShape[outputs.Length];
        for (int i = 0; i < outputs.Length; i++)
        {
            var (buffer, a) = outputs[i];
            var s = Validate(x, a, tokenSlots, nameof(a));
            s.In = a.Dim(2);
            if (x.Dim(1) != s.In) throw new ArgumentException($"x has {x.Dim(1)} features, A has {s.In}", nameof(x));
            Check.DType(buffer, DType.F32, nameof(buffer));
            Check.Shape(buffer, nameof(buffer), s.Tokens, s.Rank);
            shapes[i] = s;
        }
        if (shapes[0].Tokens == 0) return;
        ShrinkCore(x, tokenSlots, outputs, shapes);
    }

    /// <summary>y[t, o] += B[slot[t], o, :] · buffer[t, :]; tokens with slot −1 (or out of range) untouched.</summary>
    /// <param name="y">[tokens, out] F32</param>
    /// <param name="buffer">[tokens, maxRank] F32</param>
    /// <param name="b">[slots, out, maxRank] F32/F16/BF16 (scale folded in)</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    public void Expand(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots) => ExpandGroup(tokenSlots, [(y, buffer, b)]);

    /// <summary>
    /// y[t, offset + o] += B[slot[t], o, :] · buffer[t, :] for o &lt; out: the delta of B's out rows into a column range
    /// of a wider y (a tensor-parallel rank's share of a row-parallel output); tokens with slot −1 untouched.
    /// </summary>
    /// <param name="y">[tokens, width] F32, width ≥ offset + out</param>
    /// <param name="buffer">[tokens, maxRank] F32</param>
    /// <param name="b">[slots, out, maxRank] F32/F16/BF16 (scale folded in)</param>
    /// <param name="tokenSlots">[tokens] I32</param>
    /// <param name="outputOffset">the first column of y written, ≥ 0</param>
    public void Expand(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots, int outputOffset)
    {
        if (outputOffset < 0) throw new ArgumentOutOfRangeException(nameof(outputOffset), outputOffset, "the first column written must be non-negative");
        var s = ValidateExpand(y, buffer, b, tokenSlots, outputOffset);
        if (s.Tokens == 0 || s.Out == 0) return;
        ExpandCore(tokenSlots, [(y, buffer, b)], [s]);
    }

    /// <summary>
    /// y_i[t, o] += B_i[slot[t], o, :] · buffer_i[t, :] for up to <see cref="MaxGroup"/> projections: one launch when
    /// their weights take the same kernel, else one each; tokens with slot −1 untouched. Each y_i gets exactly the values
    /// <see cref="Expand(DeviceTensor, DeviceTensor, DeviceTensor, DeviceTensor)"/> would give it.
    /// </summary>
    /// <param name="tokenSlots">[tokens] I32</param>
    /// <param name="outputs">(y_i [tokens, out_i] F32, buffer_i [tokens, maxRank_i] F32, B_i [slots_i, out_i, maxRank_i] F32/F16/BF16); the y_i must not overlap</param>
    public void ExpandGroup(DeviceTensor tokenSlots, params ReadOnlySpan<(DeviceTensor Y, DeviceTensor Buffer, DeviceTensor B)> outputs)
    {
        CheckGroupSize(outputs.Length, nameof(outputs));
        Span<LoraShape> shapes = stackalloc LoraShape[outputs.Length];
        for (int i = 0; i < outputs.Length; i++) shapes[i] = ValidateExpand(outputs[i].Y, outputs[i].Buffer, outputs[i].B, tokenSlots, outputOffset: null);
        if (shapes[0].Tokens == 0) return;
        ExpandCore(tokenSlots, outputs, shapes);
    }

    /// <summary>
    /// y_i[t, o] += B_i[slot[t], o, :] · shrinks[t, c_i + slot[t] · rank_i + r] (r &lt; rank_i) for up to
    /// <see cref="MaxGroup"/> projections whose shrinks one linear computed for every slot at once: the members' A
    /// stacked [Σ_i slots_i · rank_i, in] in member order, so member i's columns begin at c_i = Σ_{j&lt;i} slots_j · rank_j
    /// (<see cref="StackedColumns"/>). Tokens with slot −1 untouched; each member gets <see cref="ExpandGroup"/>'s bits
    /// (reading each token's rank values where its slot's are) whenever its columns begin 16-byte aligned, as they do when
    /// the ranks are multiples of 8 (BF16 B takes its wide kernel only then; else the scalar one, close values).
    /// </summary>
    /// <param name="tokenSlots">[tokens] I32</param>
    /// <param name="shrinks">[tokens, Σ_i slots_i · rank_i] F32</param>
    /// <param name="outputs">(y_i [tokens, out_i] F32, B_i [slots_i, out_i, rank_i] F32/F16/BF16); the y_i must not overlap</param>
    public void ExpandStacked(DeviceTensor tokenSlots, DeviceTensor shrinks, params ReadOnlySpan<(DeviceTensor Y, DeviceTensor B)> outputs)
    {
        CheckGroupSize(outputs.Length, nameof(outputs));
        Check.DType(shrinks, DType.F32, nameof(shrinks));
        Check.Rank(shrinks, 2, nameof(shrinks));
        Span<LoraShape> shapes = stackalloc LoraShape[outputs.Length];
        var members = new (DeviceTensor Y, DeviceTensor Buffer, DeviceTensor B)[outputs.Length];
        int column = 0;
        for (int i = 0; i < outputs.Length; i++)
        {
            var (y, b) = outputs[i];
            shapes[i] = ValidateExpand(y, shrinks, b, tokenSlots, outputOffset: null, stackedColumn: column);
            column = checked(column + shapes[i].Slots * shapes[i].Rank);
            members[i] = (y, shrinks, b);
        }
        if (column != shrinks.Dim(1))
            throw new ArgumentException($"shrinks has {shrinks.Dim(1)} columns, the members' slots × rank add up to {column}", nameof(shrinks));
        if (shapes[0].Tokens == 0) return;
        ExpandCore(tokenSlots, members, shapes);
    }

    /// <summary>
    /// y[t, o] += B[slot[t], o, :] · shrinks[t, column + slot[t] · rank + r] (r &lt; rank): one member of a stacked shrink,
    /// with the bits <see cref="ExpandStacked"/> gives it; tokens with slot −1 untouched.
    /// </summary>
    /// <param name="y">[tokens, out] F32</param>
    /// <param name="expand">the member: its token slots, the stacked shrink, B and its first column</param>
    public void ExpandAt(DeviceTensor y, PendingExpand expand)
    {
        var s = ValidateAt(y, expand);
        if (s.Tokens == 0 || s.Out == 0) return;
        ExpandCore(expand.TokenSlots, [(y, expand.Shrinks, expand.B)], [s]);
    }

    /// <summary>
    /// Whether the op that reads <paramref name="y"/> next adds <paramref name="expand"/> in its own launch: on a GPU, the
    /// wide expand of a decode-sized batch, whose expand kernel takes a token a thread (<see cref="TryFusedView"/>).
    /// Elsewhere that op adds it first with <see cref="ExpandAt"/>: the same bits either way.
    /// </summary>
    public bool Fuses(DeviceTensor y, PendingExpand expand) => TryFusedView(y, expand, out _);

    /// <summary>
    /// The wide expand's view of <paramref name="expand"/> into <paramref name="y"/> for a kernel that adds <see cref="ExpandSum"/>
    /// as it reads y: a token's B rows are read once for each output a thread of it reads, as the expand kernel does for
    /// a token a thread; a prefill's expand reads them once for a run of tokens (<see cref="TokensPerItem"/>) and is not fused.
    /// </summary>
    internal virtual bool TryFusedView(DeviceTensor y, PendingExpand expand, out ExpandSegment<U4, F4> view)
    {
        var s = ValidateAt(y, expand);
        view = default;
        if (!ExpandIsWide(expand.Shrinks, expand.B, s) || TokensPerItem(s.Tokens) != 1) return false;
        view = ExpandSegments([(y, expand.Shrinks, expand.B)], [s], 1, b => b.U16.Cast<U4>(), u => u.F32.Cast<F4>()).S0;
        return true;
    }

    /// <summary>
    /// The fused views of expands one launch adds together (<paramref name="views"/>[i] for <paramref name="pending"/>[i]):
    /// true when every entry has an expand, all share one token-slot tensor and slot count, and each fuses
    /// (<see cref="TryFusedView"/>); else false, and the op adds them first (<see cref="ExpandEach"/>).
    /// </summary>
    internal bool TryFusedViews(ReadOnlySpan<(DeviceTensor Y, PendingExpand? Expand)> pending, Span<ExpandSegment<U4, F4>> views)
    {
        for (int i = 0; i < pending.Length; i++)
        {
            var (y, expand) = pending[i];
            if (expand is null || !ReferenceEquals(expand.TokenSlots, pending[0].Expand!.TokenSlots)
                || !TryFusedView(y, expand, out views[i]) || views[i].Slots != views[0].Slots)
                return false;
        }
        return true;
    }

    /// <summary>Each pending expand added into its output (<see cref="ExpandAt"/>): what an op that does not fuse them does first.</summary>
    internal void ExpandEach(ReadOnlySpan<(DeviceTensor Y, PendingExpand? Expand)> pending)
    {
        foreach (var (y, expand) in pending)
            if (expand != null) ExpandAt(y, expand);
    }

    LoraShape ValidateAt(DeviceTensor y, PendingExpand expand)
    {
        ArgumentNullException.ThrowIfNull(expand);
        if (expand.Column < 0) throw new ArgumentOutOfRangeException(nameof(expand), expand.Column, "the member's first column must be non-negative");
        var s = ValidateExpand(y, expand.Shrinks, expand.B, expand.TokenSlots, outputOffset: null, stackedColumn: expand.Column);
        if ((long)expand.Column + (long)s.Slots * s.Rank > expand.Shrinks.Dim(1))
            throw new ArgumentException($"shrinks has {expand.Shrinks.Dim(1)} columns, the member's {s.Slots} slots × rank {s.Rank} from column {expand.Column} need more", nameof(expand));
        return s;
    }

    /// <summary>Columns of a stacked shrink (<see cref="ExpandStacked"/>) for members with these B: Σ_i slots_i · rank_i.</summary>
    public static int StackedColumns(params ReadOnlySpan<DeviceTensor> b)
    {
        int columns = 0;
        foreach (var member in b) columns = checked(columns + member.Dim(0) * member.Dim(2));
        return columns;
    }

    /// <summary>The launch of <see cref="ShrinkGroup"/>, arguments checked, tokens &gt; 0.</summary>
    private protected virtual void ShrinkCore(DeviceTensor x, DeviceTensor tokenSlots, ReadOnlySpan<(DeviceTensor Buffer, DeviceTensor A)> outputs, ReadOnlySpan<LoraShape> shapes)
    {
        bool wide = ShrinkIsWide(x, outputs[0].A);
        for (int i = 1; i < outputs.Length; i++)
            if (outputs[i].A.DType != outputs[0].A.DType || ShrinkIsWide(x, outputs[i].A) != wide)
            {
                // One launch serves members of one kernel only, so that each member's bits are those of its own launch.
                for (int j = 0; j < outputs.Length; j++) ShrinkCore(x, tokenSlots, outputs.Slice(j, 1), shapes.Slice(j, 1));
                return;
            }
        int inF = shapes[0].In, groups = 0;
        for (int i = 0; i < shapes.Length; i++) groups = checked(groups + shapes[i].Tokens * Blocks(shapes[i].Rank));
        if (groups == 0) return;
        var config = new KernelConfig(groups, ShrinkThreads);
        var (stream, slots) = (_device.Stream, tokenSlots.I32);
        if (wide)
            _shrinkBf16x8(stream, config, x.F32.Cast<F4>(), slots, ShrinkSegments(outputs, shapes, a => a.U16.Cast<U4>()), inF / 8);
        else if (outputs[0].A.DType == DType.F32)
            _shrinkF32(stream, config, x.F32, slots, ShrinkSegments(outputs, shapes, a => a.F32), inF);
        else if (outputs[0].A.DType == DType.BF16)
            _shrinkBf16(stream, config, x.F32, slots, ShrinkSegments(outputs, shapes, a => a.U16), inF);
        else
            _shrinkF16(stream, config, x.F32, slots, ShrinkSegments(outputs, shapes, a => a.U16), inF);
    }

    /// <summary>The launch of <see cref="ExpandGroup"/> (and of the column-range Expand), arguments checked, tokens &gt; 0.</summary>
    private protected virtual void ExpandCore(DeviceTensor tokenSlots, ReadOnlySpan<(DeviceTensor Y, DeviceTensor Buffer, DeviceTensor B)> outputs, ReadOnlySpan<LoraShape> shapes)
    {
        bool wide = ExpandIsWide(outputs[0].Buffer, outputs[0].B, shapes[0]);
        for (int i = 1; i < outputs.Length; i++)
            if (outputs[i].B.DType != outputs[0].B.DType || ExpandIsWide(outputs[i].Buffer, outputs[i].B, shapes[i]) != wide)
            {
                for (int j = 0; j < outputs.Length; j++) ExpandCore(tokenSlots, outputs.Slice(j, 1), shapes.Slice(j, 1));
                return;
            }
        int run = TokensPerItem(shapes[0].Tokens), threads = 0;
        for (int i = 0; i < shapes.Length; i++) threads = checked(threads + Runs(shapes[i].Tokens, run) * shapes[i].Out);
        if (threads == 0) return;
        var (stream, slots) = (_device.Stream, tokenSlots.I32);
        if (wide)
            _expandBf16x8(stream, threads, slots, ExpandSegments(outputs, shapes, run, b => b.U16.Cast<U4>(), u => u.F32.Cast<F4>()), run);
        else if (outputs[0].B.DType == DType.F32)
            _expandF32(stream, threads, slots, ExpandSegments(outputs, shapes, run, b => b.F32, u => u.F32), run);
        else if (outputs[0].B.DType == DType.BF16)
            _expandBf16(stream, threads, slots, ExpandSegments(outputs, shapes, run, b => b.U16, u => u.F32), run);
        else
            _expandF16(stream, threads, slots, ExpandSegments(outputs, shapes, run, b => b.U16, u => u.F32), run);
    }

    /// <summary>
    /// Tokens an expand thread takes in turn: one for a decode batch (a thread per output and token fills the GPU), up to
    /// <see cref="MaxTokensPerItem"/> for a prefill, whose B rows are then read from L2 once per run instead of once per token.
    /// </summary>
    internal static int TokensPerItem(int tokens) => Math.Clamp(tokens / 128, 1, MaxTokensPerItem);

    /// <summary>The longest run of tokens one expand thread takes (<see cref="TokensPerItem"/>).</summary>
    internal const int MaxTokensPerItem = 16;

    static int Runs(int tokens, int run) => (tokens + run - 1) / run;

    /// <summary>Whether A's rows are whole 16-byte units of BF16 and x's rows 16-byte aligned: the wide shrink.</summary>
    static bool ShrinkIsWide(DeviceTensor x, DeviceTensor a) =>
        a.DType == DType.BF16 && a.Dim(2) % 8 == 0 && a.ElementOffset % 8 == 0 && x.ElementOffset % 4 == 0;

    /// <summary>
    /// Whether B's rows are whole 16-byte units of BF16 and every token's rank values in the buffer 16-byte aligned (its
    /// rows, and a stacked member's first column): the wide expand.
    /// </summary>
    static bool ExpandIsWide(DeviceTensor buffer, DeviceTensor b, LoraShape shape) =>
        b.DType == DType.BF16 && b.Dim(2) % 8 == 0 && b.ElementOffset % 8 == 0 && buffer.ElementOffset % 4 == 0 && buffer.Dim(1) % 4 == 0
        && shape.UBase % 4 == 0;

    /// <summary>Shrink groups per token for a rank: blocks of <see cref="RowsPerGroup"/> rows.</summary>
    static int Blocks(int rank) => (rank + RowsPerGroup - 1) / RowsPerGroup;

    static LoraSegments<ShrinkSegment<TW>> ShrinkSegments<TW>(ReadOnlySpan<(DeviceTensor Buffer, DeviceTensor A)> outputs, ReadOnlySpan<LoraShape> shapes,
        Func<DeviceTensor, ArrayView<TW>> weights) where TW : unmanaged
    {
        var segments = new LoraSegments<ShrinkSegment<TW>>();
        for (int i = 0; i < outputs.Length; i++)
        {
            var s = shapes[i];
            var member = new ShrinkSegment<TW> { Buffer = outputs[i].Buffer.F32, A = weights(outputs[i].A), Rank = s.Rank, Slots = s.Slots, Blocks = Blocks(s.Rank) };
            segments.Add(i, member, s.Tokens * member.Blocks);
        }
        return segments;
    }

    static LoraSegments<ExpandSegment<TW, TU>> ExpandSegments<TW, TU>(ReadOnlySpan<(DeviceTensor Y, DeviceTensor Buffer, DeviceTensor B)> outputs,
        ReadOnlySpan<LoraShape> shapes, int run, Func<DeviceTensor, ArrayView<TW>> weights, Func<DeviceTensor, ArrayView<TU>> buffer)
        where TW : unmanaged where TU : unmanaged
    {
        var segments = new LoraSegments<ExpandSegment<TW, TU>>();
        for (int i = 0; i < outputs.Length; i++)
        {
            var s = shapes[i];
            var member = new ExpandSegment<TW, TU>
            {
                Y = outputs[i].Y.F32, U = buffer(outputs[i].Buffer), B = weights(outputs[i].B),
                Tokens = s.Tokens, Out = s.Out, Rank = s.Rank, Slots = s.Slots, YStride = s.YStride, YOffset = s.YOffset,
                UStride = s.UStride, UBase = s.UBase, USlot = s.USlot,
            };
            segments.Add(i, member, Runs(s.Tokens, run) * s.Out);
        }
        return segments;
    }

    static void CheckGroupSize(int members, string name)
    {
        if (members is < 1 or > MaxGroup) throw new ArgumentException($"a LoRA group has 1 to {MaxGroup} members, got {members}", name);
    }

    /// <summary>
    /// One expand member's shape; <paramref name="stackedColumn"/>: the member reads a stacked shrink from that column
    /// (<see cref="ExpandStacked"/>, whose width its caller checks), else a buffer of exactly B's rank columns.
    /// </summary>
    LoraShape ValidateExpand(DeviceTensor y, DeviceTensor buffer, DeviceTensor b, DeviceTensor tokenSlots, int? outputOffset, int? stackedColumn = null)
    {
        Check.FloatWeight(b, nameof(b));
        Check.Rank(b, 3, nameof(b));
        var s = Validate(buffer, b, tokenSlots, nameof(b), rankDim: 2);
        s.Out = b.Dim(1);
        if (stackedColumn == null && buffer.Dim(1) != s.Rank) throw new ArgumentException($"buffer has {buffer.Dim(1)} columns, B has rank {s.Rank}", nameof(buffer));
        Check.DType(y, DType.F32, nameof(y));
        if (outputOffset is not int offset)
        {
            Check.Shape(y, nameof(y), s.Tokens, s.Out);
            s.YOffset = 0;
        }
        else
        {
            Check.Rank(y, 2, nameof(y));
            if (y.Dim(0) != s.Tokens || y.Dim(1) < offset + s.Out)
                throw new ArgumentException($"y {y.ShapeString} has no columns [{offset}, {offset + s.Out}) for {s.Tokens} tokens", nameof(y));
            s.YOffset = offset;
        }
        s.YStride = y.Dim(1);
        (s.UStride, s.UBase, s.USlot) = stackedColumn is int column ? (buffer.Dim(1), column, s.Rank) : (s.Rank, 0, 0);
        return s;
    }

    static LoraShape Validate(DeviceTensor input, DeviceTensor weights, DeviceTensor tokenSlots, string weightsName, int rankDim = 1)
    {
        Check.DType(input, DType.F32, rankDim == 1 ? "x" : "buffer");
        Check.Rank(input, 2, rankDim == 1 ? "x" : "buffer");
        Check.FloatWeight(weights, weightsName);
        Check.Rank(weights, 3, weightsName);
        int tokens = input.Dim(0);
        Check.DType(tokenSlots, DType.I32, nameof(tokenSlots));
        Check.Shape(tokenSlots, nameof(tokenSlots), tokens);
        return new LoraShape { Tokens = tokens, Slots = weights.Dim(0), Rank = weights.Dim(rankDim) };
    }
}

/// <summary>Up to three members of one LoRA launch; work items [0, End0) are S0's, [End0, End1) S1's, the rest S2's.</summary>
internal struct LoraSegments<T> where T : struct
{
    public T S0, S1, S2;
    public int End0, End1;

    /// <summary>Appends member <paramref name="index"/> (0, 1, 2 in turn) owning the next <paramref name="items"/> work items; members not added alias the last one and own none.</summary>
    public void Add(int index, T member, int items)
    {
        switch (index)
        {
            case 0:
                S0 = S1 = S2 = member;
                End0 = End1 = items;
                break;
            case 1:
                S1 = S2 = member;
                End1 += items;
                break;
            default:
                S2 = member;
                break;
        }
    }
}

/// <summary>One shrink member: buffer [tokens, Rank] F32 and A [Slots, Rank, in] (in 16-byte units on the wide path).</summary>
internal struct ShrinkSegment<TW> where TW : unmanaged
{
    public ArrayView<float> Buffer;
    public ArrayView<TW> A;
    public int Rank, Slots;
    public int Blocks; // groups per token: Rank rows in blocks of four
}

/// <summary>Whether a kernel adds a pending LoRA expand (<see cref="PendingExpand"/>) as it reads: a build of its own each way.</summary>
internal interface IExpandMode
{
    bool On { get; }
}

/// <summary>No pending expand: the kernel as it is without LoRA.</summary>
internal struct NoExpand : IExpandMode
{
    public readonly bool On => false;
}

/// <summary>A pending expand added where its output is read.</summary>
internal struct WithExpand : IExpandMode
{
    public readonly bool On => true;
}

/// <summary>
/// One expand member: y [Tokens, YStride] F32 written at columns [YOffset, YOffset + Out), the shrink U [tokens, UStride]
/// (F32, or 16-byte units on the wide path) whose token t, slot s values begin at t · UStride + UBase + s · USlot (F32
/// columns), and B [Slots, Out, Rank] (16-byte units on the wide path).
/// </summary>
internal struct ExpandSegment<TW, TU> where TW : unmanaged where TU : unmanaged
{
    public ArrayView<float> Y;
    public ArrayView<TU> U;
    public ArrayView<TW> B;
    public int Tokens, Out, Rank, Slots, YStride, YOffset;
    public int UStride, UBase, USlot;
}
