using FsCheck.Xunit;
using LoraEngine.Tensors.Kernels;
using LoraEngine.Tensors.Reference;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Tensors.Tests.Kernels;

public class LoraKernelsTests
{
    internal sealed record Case(int Tokens, int In, int Out, int Slots, int Rank, DType WType, float[] X, float[] Y, float[] A, float[] B, int[] TokenSlots);

    internal static Case NewCase(int seed)
    {
        var rnd = new RandomData(seed);
        int tokens = rnd.Int(1, 12), inF = rnd.Int(1, 50), outF = rnd.Int(1, 50), slots = rnd.Int(1, 3), rank = rnd.Int(1, 9);
        // Slots −1 (no adapter) and out of range (must be skipped, never read) mixed in.
        var tokenSlots = Enumerable.Range(0, tokens).Select(_ => rnd.Int(-1, slots)).ToArray();
        return new Case(tokens, inF, outF, slots, rank, rnd.WeightType(), rnd.Floats(tokens * inF), rnd.Floats(tokens * outF),
            rnd.Floats(slots * rank * inF), rnd.Floats(slots * outF * rank), tokenSlots);
    }

    internal static (float[] Buffer, float[] Y) Run(ComputeDevice device, Case c)
    {
        using var x = device.Upload(c.X, c.Tokens, c.In);
        using var y = device.Upload(c.Y, c.Tokens, c.Out);
        using var slots = device.Upload(c.TokenSlots, c.Tokens);
        using var buffer = device.Allocate(DType.F32, c.Tokens, c.Rank);
        var (a, _) = RandomData.UploadWeight(device, c.A, c.WType, c.Slots, c.Rank, c.In);
        var (b, _) = RandomData.UploadWeight(device, c.B, c.WType, c.Slots, c.Out, c.Rank);
        using (a)
        using (b)
        {
            device.Lora.Shrink(buffer, x, a, slots);
            device.Lora.Expand(y, buffer, b, slots);
        }
        return (buffer.ToArray<float>(), y.ToArray<float>());
    }

    [Property(MaxTest = 20)]
    public void Shrink_and_expand_match_reference_on_every_device(int seed)
    {
        var c = NewCase(seed);
        var a = RandomData.UploadWeight(TestDevices.CpuFast, c.A, c.WType, c.A.Length).Stored;
        var b = RandomData.UploadWeight(TestDevices.CpuFast, c.B, c.WType, c.B.Length).Stored;
        var buffer = LoraReference.Shrink(c.X, a, c.TokenSlots, c.Slots, c.Rank, c.In);
        var y = LoraReference.Expand(c.Y, buffer, b, c.TokenSlots, c.Slots, c.Rank, c.Out);
        foreach (var device in TestDevices.All)
        {
            var (gotBuffer, gotY) = Run(device, c);
            Tolerance.AssertClose(gotBuffer, buffer, 2e-5, 1e-5, $"{device} shrink");
            Tolerance.AssertClose(gotY, y, 5e-5, 1e-5, $"{device} expand");
        }
    }

    [Property(MaxTest = 8)]
    public void Configured_device_equals_the_cpu_accelerator(int seed)
    {
        var c = NewCase(seed);
        var (gb, gy) = Run(TestDevices.Configured, c);
        var (cb, cy) = Run(TestDevices.Cpu, c);
        Tolerance.AssertClose(gb, cb, 1e-5, 1e-5);
        Tolerance.AssertClose(gy, cy, 1e-5, 1e-5);
    }

    [Fact]
    public void Tokens_without_an_adapter_are_untouched_bit_for_bit()
    {
        var rnd = new RandomData(17);
        var c = new Case(3, 10, 7, 2, 4, DType.BF16, rnd.Floats(30), rnd.Floats(21), rnd.Floats(2 * 4 * 10), rnd.Floats(2 * 7 * 4), [-1, -1, -1]);
        foreach (var device in TestDevices.All) Assert.Equal(c.Y, Run(device, c).Y);
    }

    [Property(MaxTest = 12)]
    public void Expand_into_a_column_range_adds_there_only(int seed)
    {
        var c = NewCase(seed);
        var rnd = new RandomData(seed + 1);
        int before = rnd.Int(0, 20), after = rnd.Int(0, 20), width = before + c.Out + after;
        var wide = rnd.Floats(c.Tokens * width);
        var b = RandomData.UploadWeight(TestDevices.CpuFast, c.B, c.WType, c.B.Length).Stored;
        var buffer = rnd.Floats(c.Tokens * c.Rank);
        // The reference on the range's columns alone; every other column keeps its value.
        var range = Enumerable.Range(0, c.Tokens).SelectMany(t => wide.AsSpan(t * width + before, c.Out).ToArray()).ToArray();
        var expanded = LoraReference.Expand(range, buffer, b, c.TokenSlots, c.Slots, c.Rank, c.Out);
        var expected = (float[])wide.Clone();
        for (int t = 0; t < c.Tokens; t++) expanded.AsSpan(t * c.Out, c.Out).CopyTo(expected.AsSpan(t * width + before));
        foreach (var device in TestDevices.All)
        {
            using var y = device.Upload(wide, c.Tokens, width);
            using var bufferT = device.Upload(buffer, c.Tokens, c.Rank);
            using var slots = device.Upload(c.TokenSlots, c.Tokens);
            using var bt = RandomData.UploadWeight(device, c.B, c.WType, c.Slots, c.Out, c.Rank).Tensor;
            device.Lora.Expand(y, bufferT, bt, slots, outputOffset: before);
            var got = y.ToArray<float>();
            Tolerance.AssertClose(got, expected, 5e-5, 1e-5, $"{device} expand at column {before} of {width}");
            for (int t = 0; t < c.Tokens; t++)
            {
                Assert.Equal(wide.AsSpan(t * width, before).ToArray(), got.AsSpan(t * width, before).ToArray());
                Assert.Equal(wide.AsSpan(t * width + before + c.Out, after).ToArray(), got.AsSpan(t * width + before + c.Out, after).ToArray());
            }
        }
    }

    [Fact]
    public void Shrink_expand_and_their_groups_reject_bad_arguments()
    {
        var d = TestDevices.Cpu;
        using var x = d.Zeros(DType.F32, 2, 8);
        using var a = d.Zeros(DType.F32, 3, 4, 8);
        using var b = d.Zeros(DType.F32, 3, 6, 4);
        using var buffer = d.Zeros(DType.F32, 2, 4);
        using var y = d.Zeros(DType.F32, 2, 6);
        using var slots = d.Zeros(DType.I32, 2);
        using var wrongSlots = d.Zeros(DType.I32, 3);
        using var wrongA = d.Zeros(DType.F32, 3, 4, 9);
        Assert.Equal("x", Assert.Throws<ArgumentException>(() => d.Lora.Shrink(buffer, x, wrongA, slots)).ParamName);
        Assert.Equal("tokenSlots", Assert.Throws<ArgumentException>(() => d.Lora.Shrink(buffer, x, a, wrongSlots)).ParamName);
        Assert.Equal("buffer", Assert.Throws<ArgumentException>(() => d.Lora.Expand(y, x, b, slots)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Lora.Expand(buffer, buffer, b, slots)).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Lora.Expand(y, buffer, b, slots, outputOffset: 1)).ParamName); // columns [1, 7) of 6
        Assert.Equal("outputOffset", Assert.Throws<ArgumentOutOfRangeException>(() => d.Lora.Expand(y, buffer, b, slots, outputOffset: -1)).ParamName);
        // Grouped launches: none or more than LoraOps.MaxGroup members, and a member's own shape.
        Assert.Equal("outputs", Assert.Throws<ArgumentException>(() => d.Lora.ShrinkGroup(x, slots)).ParamName);
        Assert.Equal("outputs", Assert.Throws<ArgumentException>(() => d.Lora.ShrinkGroup(x, slots, (buffer, a), (buffer, a), (buffer, a), (buffer, a))).ParamName);
        Assert.Equal("outputs", Assert.Throws<ArgumentException>(() => d.Lora.ExpandGroup(slots)).ParamName);
        Assert.Equal("buffer", Assert.Throws<ArgumentException>(() => d.Lora.ShrinkGroup(x, slots, (buffer, a), (y, a))).ParamName);
        Assert.Equal("y", Assert.Throws<ArgumentException>(() => d.Lora.ExpandGroup(slots, (y, buffer, b), (buffer, buffer, b))).ParamName);
    }

    // ---- The wide (16-byte) and scalar kernels on chosen shapes, grouped launches, batch invariance.

    /// <summary>One projection of a shared-input group: A [slots, rank, in], B [slots, out, rank], y [tokens, out].</summary>
    sealed record Member(int Rank, int Out, DType WType, float[] A, float[] B, float[] Y);

    const int NumSlots = 3;

    static int[] SlotsFor(RandomData rnd, int tokens) =>
        Enumerable.Range(0, tokens).Select(t => t == 0 ? 0 : rnd.Int(-1, NumSlots)).ToArray(); // −1 and NumSlots (out of range) mixed in

    static Member NewMember(RandomData rnd, int tokens, int inF, int outF, int rank, DType wType) =>
        new(rank, outF, wType, rnd.Floats(NumSlots * rank * inF), rnd.Floats(NumSlots * outF * rank), rnd.Floats(tokens * outF));

    /// <summary>Tensors of one run; views at an element offset into a larger allocation when asked (unaligned for odd offsets).</summary>
    sealed class Tensors(ComputeDevice device) : IDisposable
    {
        readonly List<DeviceTensor> _owned = [];

        public DeviceTensor Weight(float[] values, DType dtype, int offset, params int[] shape)
        {
            var padded = new float[offset + values.Length];
            values.CopyTo(padded, offset);
            var (t, _) = RandomData.UploadWeight(device, padded, dtype, padded.Length);
            _owned.Add(t);
            return t.Slice(offset, values.Length).Reshape(shape);
        }

        public DeviceTensor Floats(float[] values, int offset, params int[] shape) => Weight(values, DType.F32, offset, shape);

        public DeviceTensor Slots(int[] slots)
        {
            var t = device.Upload(slots, slots.Length);
            _owned.Add(t);
            return t;
        }

        public DeviceTensor Zeros(params int[] shape)
        {
            var t = device.Zeros(DType.F32, shape);
            _owned.Add(t);
            return t;
        }

        public void Dispose() => _owned.ForEach(t => t.Dispose());
    }

    /// <summary>Shrink then expand of each member on its own (grouped: one ShrinkGroup and one ExpandGroup); the buffers and ys.</summary>
    static (float[][] Buffers, float[][] Ys) RunMembers(ComputeDevice device, float[] x, int[] tokenSlots, int inF, Member[] members, bool grouped,
        int xOffset = 0, int wOffset = 0)
    {
        int tokens = tokenSlots.Length;
        using var t = new Tensors(device);
        var xt = t.Floats(x, xOffset, tokens, inF);
        var slots = t.Slots(tokenSlots);
        var a = members.Select(m => t.Weight(m.A, m.WType, wOffset, NumSlots, m.Rank, inF)).ToArray();
        var b = members.Select(m => t.Weight(m.B, m.WType, wOffset, NumSlots, m.Out, m.Rank)).ToArray();
        var buffers = members.Select(m => t.Zeros(tokens, m.Rank)).ToArray();
        var ys = members.Select(m => t.Floats(m.Y, 0, tokens, m.Out)).ToArray();
        if (grouped)
        {
            device.Lora.ShrinkGroup(xt, slots, members.Select((_, i) => (buffers[i], a[i])).ToArray());
            device.Lora.ExpandGroup(slots, members.Select((_, i) => (ys[i], buffers[i], b[i])).ToArray());
        }
        else
            for (int i = 0; i < members.Length; i++)
            {
                device.Lora.Shrink(buffers[i], xt, a[i], slots);
                device.Lora.Expand(ys[i], buffers[i], b[i], slots);
            }
        return (buffers.Select(v => v.ToArray<float>()).ToArray(), ys.Select(v => v.ToArray<float>()).ToArray());
    }

    [Theory]
    [InlineData(1, 16, 24, 16, DType.BF16, 0, 0)]    // wide: one unit per thread
    [InlineData(70, 40, 33, 4, DType.BF16, 0, 0)]
    [InlineData(5, 4104, 9, 3, DType.BF16, 0, 0)]    // 513 units: the second unit of a pass, a third pass
    [InlineData(2, 2056, 5, 64, DType.BF16, 0, 0)]
    [InlineData(3, 8, 8, 1, DType.BF16, 0, 0)]
    [InlineData(9, 13, 17, 3, DType.BF16, 0, 0)]     // in not a multiple of 8: scalar kernels
    [InlineData(2, 24, 16, 64, DType.BF16, 1, 0)]    // x unaligned: scalar shrink
    [InlineData(3, 24, 16, 16, DType.BF16, 0, 3)]    // A and B unaligned: scalar kernels
    [InlineData(12, 32, 20, 8, DType.F16, 0, 0)]
    [InlineData(6, 48, 12, 16, DType.F32, 0, 0)]
    [InlineData(4, 300, 7, 3, DType.F32, 0, 0)]
    public void Shrink_and_expand_match_reference_on_chosen_shapes(int tokens, int inF, int outF, int rank, DType wType, int xOffset, int wOffset)
    {
        var rnd = new RandomData(tokens * 1000 + inF + rank);
        var tokenSlots = SlotsFor(rnd, tokens);
        var x = rnd.Floats(tokens * inF);
        var m = NewMember(rnd, tokens, inF, outF, rank, wType);
        var a = RandomData.UploadWeight(TestDevices.CpuFast, m.A, wType, m.A.Length).Stored;
        var b = RandomData.UploadWeight(TestDevices.CpuFast, m.B, wType, m.B.Length).Stored;
        var buffer = LoraReference.Shrink(x, a, tokenSlots, NumSlots, rank, inF);
        var y = LoraReference.Expand(m.Y, buffer, b, tokenSlots, NumSlots, rank, outF);
        double atol = 2e-6 * Math.Sqrt(inF) * Math.Sqrt(rank);
        foreach (var device in TestDevices.All)
        {
            var (gotBuffer, gotY) = RunMembers(device, x, tokenSlots, inF, [m], grouped: false, xOffset, wOffset);
            Tolerance.AssertClose(gotBuffer[0], buffer, atol, 1e-5, $"{device} shrink");
            Tolerance.AssertClose(gotY[0], y, atol, 1e-5, $"{device} expand");
        }
    }

    [Theory]
    [InlineData(DType.BF16, DType.BF16, DType.BF16, 48)] // one wide launch each
    [InlineData(DType.BF16, DType.BF16, DType.BF16, 13)] // one scalar launch each
    [InlineData(DType.F32, DType.F16, DType.BF16, 48)]   // a launch per member
    [InlineData(DType.F16, DType.F16, DType.F16, 40)]
    public void Grouped_launches_give_each_member_the_bits_of_its_own(DType q, DType k, DType v, int inF)
    {
        var rnd = new RandomData(inF);
        int tokens = 6;
        var tokenSlots = SlotsFor(rnd, tokens);
        var x = rnd.Floats(tokens * inF);
        Member[] members = [NewMember(rnd, tokens, inF, 24, 16, q), NewMember(rnd, tokens, inF, 8, 16, k), NewMember(rnd, tokens, inF, 9, 8, v)];
        foreach (var device in TestDevices.All)
        {
            var alone = RunMembers(device, x, tokenSlots, inF, members, grouped: false);
            var grouped = RunMembers(device, x, tokenSlots, inF, members, grouped: true);
            for (int i = 0; i < members.Length; i++)
            {
                Assert.Equal(alone.Buffers[i], grouped.Buffers[i]);
                Assert.Equal(alone.Ys[i], grouped.Ys[i]);
            }
            var two = RunMembers(device, x, tokenSlots, inF, members[..2], grouped: true);
            Assert.Equal(alone.Ys[1], two.Ys[1]);
        }
    }

    [Theory]
    [InlineData(DType.BF16, DType.BF16, DType.BF16, 16, 8)] // the wide kernel
    [InlineData(DType.F32, DType.F16, DType.BF16, 16, 8)]   // a launch per member
    [InlineData(DType.F32, DType.BF16, DType.F32, 3, 1)]    // rows of 60 columns, the BF16 member's beginning at 9: the scalar kernel
    public void A_stacked_expand_gives_each_member_the_bits_of_its_own_expand(DType q, DType k, DType v, int qRank, int vRank)
    {
        // Each member's shrink values sit at the token's slot's columns of the stacked shrink; every other column holds
        // values the expand must never read.
        var rnd = new RandomData(77);
        int tokens = 7, inF = 16;
        var tokenSlots = SlotsFor(rnd, tokens);
        Member[] members = [NewMember(rnd, tokens, inF, 24, qRank, q), NewMember(rnd, tokens, inF, 8, 16, k), NewMember(rnd, tokens, inF, 9, vRank, v)];
        var own = members.Select(m => rnd.Floats(tokens * m.Rank)).ToArray();
        int columns = members.Sum(m => NumSlots * m.Rank);
        var stacked = rnd.Floats(tokens * columns);
        for (int t = 0, c = 0; t < tokens; t++, c = 0)
            for (int i = 0; i < members.Length; c += NumSlots * members[i].Rank, i++)
                if (tokenSlots[t] is >= 0 and < NumSlots)
                    own[i].AsSpan(t * members[i].Rank, members[i].Rank).CopyTo(stacked.AsSpan(t * columns + c + tokenSlots[t] * members[i].Rank));
        foreach (var device in TestDevices.All)
        {
            using var w = new Tensors(device);
            var slots = w.Slots(tokenSlots);
            var b = members.Select(m => w.Weight(m.B, m.WType, 0, NumSlots, m.Out, m.Rank)).ToArray();
            var alone = members.Select(m => w.Floats(m.Y, 0, tokens, m.Out)).ToArray();
            for (int i = 0; i < members.Length; i++) device.Lora.Expand(alone[i], w.Floats(own[i], 0, tokens, members[i].Rank), b[i], slots);
            var together = members.Select(m => w.Floats(m.Y, 0, tokens, m.Out)).ToArray();
            Assert.Equal(columns, LoraOps.StackedColumns(b));
            device.Lora.ExpandStacked(slots, w.Floats(stacked, 0, tokens, columns), members.Select((_, i) => (together[i], b[i])).ToArray());
            for (int i = 0; i < members.Length; i++)
            {
                // A BF16 member whose columns do not begin 16-byte aligned takes the scalar kernel: other sums, close values.
                bool realigned = members[i].WType == DType.BF16 && members.Take(i).Sum(m => NumSlots * m.Rank) % 4 != 0;
                if (realigned) Tolerance.AssertClose(together[i].ToArray<float>(), alone[i].ToArray<float>(), 1e-5, 1e-6, $"{device} member {i}");
                else Assert.Equal(alone[i].ToArray<float>(), together[i].ToArray<float>());
            }

            var narrow = w.Floats(stacked.AsSpan(0, tokens * (columns - 1)).ToArray(), 0, tokens, columns - 1);
            Assert.Equal("shrinks", Assert.Throws<ArgumentException>(() => device.Lora.ExpandStacked(slots, narrow, members.Select((_, i) => (together[i], b[i])).ToArray())).ParamName);
        }
    }

    [Theory]
    [InlineData(2056, 5, DType.BF16)] // wide; rank rows in a full and a partial block
    [InlineData(13, 3, DType.F16)]    // scalar
    public void A_tokens_result_does_not_depend_on_its_batch(int inF, int rank, DType wType)
    {
        var rnd = new RandomData(rank);
        int tokens = 33, outF = 40;
        var tokenSlots = SlotsFor(rnd, tokens);
        var x = rnd.Floats(tokens * inF);
        var member = NewMember(rnd, tokens, inF, outF, rank, wType);
        foreach (var device in TestDevices.All)
        {
            var batch = RunMembers(device, x, tokenSlots, inF, [member], grouped: true);
            foreach (int t in new[] { 0, 1, 17, 32 })
            {
                var alone = member with { Y = member.Y.AsSpan(t * outF, outF).ToArray() };
                var one = RunMembers(device, x.AsSpan(t * inF, inF).ToArray(), [tokenSlots[t]], inF, [alone], grouped: true);
                Assert.Equal(batch.Buffers[0].AsSpan(t * rank, rank).ToArray(), one.Buffers[0]);
                Assert.Equal(batch.Ys[0].AsSpan(t * outF, outF).ToArray(), one.Ys[0]);
            }
            var firstFive = member with { Y = member.Y.AsSpan(0, 5 * outF).ToArray() };
            var five = RunMembers(device, x.AsSpan(0, 5 * inF).ToArray(), tokenSlots[..5], inF, [firstFive], grouped: true);
            Assert.Equal(batch.Ys[0].AsSpan(0, 5 * outF).ToArray(), five.Ys[0]);
        }
    }

    [Theory]
    [InlineData(DType.BF16, 16)] // the wide kernel
    [InlineData(DType.F16, 5)]   // the scalar kernel
    public void A_prefills_expand_gives_each_token_the_bits_of_a_decode_batch(DType wType, int rank)
    {
        // A prefill's threads take runs of 16 tokens (the last one short here), a decode batch's one token each; runs of
        // one slot as a prefill has them, with tokens of no slot (−1) and out of range between.
        var rnd = new RandomData(rank + 5);
        int tokens = 2100, outF = 24, batch = 100;
        Assert.Equal(LoraOps.MaxTokensPerItem, LoraOps.TokensPerItem(tokens));
        Assert.Equal(1, LoraOps.TokensPerItem(batch));
        var tokenSlots = new int[tokens];
        for (int t = 0; t < tokens;)
        {
            int slot = rnd.Int(-1, NumSlots), length = rnd.Int(1, 300);
            for (int end = Math.Min(tokens, t + length); t < end; t++) tokenSlots[t] = slot;
        }
        var member = NewMember(rnd, tokens, 1, outF, rank, wType);
        var shrunk = rnd.Floats(tokens * rank);
        foreach (var device in TestDevices.All)
        {
            using var w = new Tensors(device);
            var b = w.Weight(member.B, wType, 0, NumSlots, outF, rank);
            var whole = w.Floats(member.Y, 0, tokens, outF);
            device.Lora.Expand(whole, w.Floats(shrunk, 0, tokens, rank), b, w.Slots(tokenSlots));
            var prefill = whole.ToArray<float>();
            for (int first = 0; first < tokens; first += batch)
            {
                var y = w.Floats(member.Y.AsSpan(first * outF, batch * outF).ToArray(), 0, batch, outF);
                device.Lora.Expand(y, w.Floats(shrunk.AsSpan(first * rank, batch * rank).ToArray(), 0, batch, rank), b, w.Slots(tokenSlots[first..(first + batch)]));
                Assert.Equal(prefill.AsSpan(first * outF, batch * outF).ToArray(), y.ToArray<float>());
            }
        }
    }

    [Theory]
    [InlineData(16, DType.BF16)] // the wide expand: the ILGPU kernels add it in the op's own launch
    [InlineData(3, DType.BF16)]  // rank not a multiple of 8: added by its own launch first
    [InlineData(8, DType.F32)]
    public void Ops_that_add_a_pending_expand_give_the_bits_of_the_expand_then_the_op(int rank, DType bType)
    {
        // A stacked shrink of three members (o: hidden outputs; gate, up: intermediate), every slot's columns filled;
        // tokens with no slot (−1) and out of range mixed in.
        var rnd = new RandomData(rank * 10 + (int)bType);
        int tokens = 9, hidden = 40, inter = 24, columns = 3 * NumSlots * rank;
        var tokenSlots = SlotsFor(rnd, tokens);
        float[] x = rnd.Floats(tokens * hidden), delta = rnd.Floats(tokens * hidden), gate = rnd.Floats(tokens * inter), up = rnd.Floats(tokens * inter);
        float[] shrinks = rnd.Floats(tokens * columns), norm = rnd.Floats(hidden);
        float[][] b = [rnd.Floats(NumSlots * hidden * rank), rnd.Floats(NumSlots * inter * rank), rnd.Floats(NumSlots * inter * rank)];
        foreach (var device in TestDevices.All)
        {
            using var w = new Tensors(device);
            var slots = w.Slots(tokenSlots);
            var u = w.Floats(shrinks, 0, tokens, columns);
            var weight = w.Weight(norm, DType.BF16, 0, hidden);
            PendingExpand Pending(int member, int outF) => new(slots, u, w.Weight(b[member], bType, 0, NumSlots, outF, rank), member * NumSlots * rank);
            var (oExpand, gateExpand, upExpand) = (Pending(0, hidden), Pending(1, inter), Pending(2, inter));
            bool fuses = rank % 8 == 0 && bType == DType.BF16 && device.Lora is not HostLora;
            Assert.Equal(fuses, device.Lora.Fuses(w.Floats(delta, 0, tokens, hidden), oExpand));
            var prefill = new PendingExpand(w.Slots(new int[256]), w.Zeros(256, columns), oExpand.B, 0);
            Assert.False(device.Lora.Fuses(w.Zeros(256, hidden), prefill)); // its expand keeps a launch of its own, runs of tokens a thread

            var (x1, d1, y1) = (w.Floats(x, 0, tokens, hidden), w.Floats(delta, 0, tokens, hidden), w.Zeros(tokens, hidden));
            device.Lora.ExpandAt(d1, oExpand);
            device.Norm.AddRmsNorm(y1, x1, d1, weight, 1e-5f);
            var (x2, d2, y2) = (w.Floats(x, 0, tokens, hidden), w.Floats(delta, 0, tokens, hidden), w.Zeros(tokens, hidden));
            device.Norm.AddRmsNorm(y2, x2, d2, oExpand, weight, 1e-5f);
            Assert.Equal(y1.ToArray<float>(), y2.ToArray<float>());
            Assert.Equal(x1.ToArray<float>(), x2.ToArray<float>());
            Assert.NotEqual(w.Floats(delta, 0, tokens, hidden).ToArray<float>(), d1.ToArray<float>()); // the expand added something

            var (g1, u1) = (w.Floats(gate, 0, tokens, inter), w.Floats(up, 0, tokens, inter));
            device.Lora.ExpandAt(g1, gateExpand);
            device.Lora.ExpandAt(u1, upExpand);
            device.Elementwise.SwiGlu(g1, g1, u1);
            var (g2, u2) = (w.Floats(gate, 0, tokens, inter), w.Floats(up, 0, tokens, inter));
            device.Elementwise.SwiGlu(g2, g2, u2, gateExpand, upExpand);
            Assert.Equal(g1.ToArray<float>(), g2.ToArray<float>());

            var past = new PendingExpand(slots, u, oExpand.B, columns - NumSlots * rank + 1);
            Assert.Equal("expand", Assert.Throws<ArgumentException>(() => device.Norm.AddRmsNorm(y2, x2, d2, past, weight, 1e-5f)).ParamName);
        }
    }

    [Theory]
    [InlineData(16, DType.BF16)] // the wide expand: the ILGPU kernels add all three in the op's own launch
    [InlineData(3, DType.BF16)]  // added by their own launches first
    public void Rotate_and_write_kv_with_pending_expands_gives_the_bits_of_the_expands_then_the_op(int rank, DType bType)
    {
        // q/k/v of two heads and one KV head; a position past the cos/sin table (unrotated), a token with no cache slot
        // and tokens with no LoRA slot or one out of range.
        var rnd = new RandomData(rank + 100);
        int tokens = 7, headDim = 8, qWidth = 2 * headDim, kvWidth = headDim, maxPositions = 16, columns = 3 * NumSlots * rank;
        var loraSlots = SlotsFor(rnd, tokens);
        var positions = Enumerable.Range(0, tokens).Select(t => t == 3 ? maxPositions : rnd.Int(0, maxPositions - 1)).ToArray();
        var cacheSlots = Enumerable.Range(0, tokens).Select(t => t == 5 ? -1 : 2 * t + 1).ToArray();
        var table = RopeOps.CosSinTable(rnd.Floats(headDim / 2), maxPositions);
        float[] q = rnd.Floats(tokens * qWidth), k = rnd.Floats(tokens * kvWidth), v = rnd.Floats(tokens * kvWidth), shrinks = rnd.Floats(tokens * columns);
        float[][] b = [rnd.Floats(NumSlots * qWidth * rank), rnd.Floats(NumSlots * kvWidth * rank), rnd.Floats(NumSlots * kvWidth * rank)];
        foreach (var device in TestDevices.All)
        {
            using var w = new Tensors(device);
            var slots = w.Slots(loraSlots);
            var u = w.Floats(shrinks, 0, tokens, columns);
            var pos = w.Slots(positions);
            var cacheSlot = w.Slots(cacheSlots);
            var cs = w.Floats(table, 0, maxPositions, headDim / 2, 2);
            PendingExpand Pending(int member, int outF) => new(slots, u, w.Weight(b[member], bType, 0, NumSlots, outF, rank), member * NumSlots * rank);
            PendingExpand[] expands = [Pending(0, qWidth), Pending(1, kvWidth), Pending(2, kvWidth)];
            Assert.Equal(rank % 8 == 0 && device.Lora is not HostLora, device.Lora.Fuses(w.Floats(q, 0, tokens, qWidth), expands[0]));

            float[][] Run(bool pending)
            {
                var (qt, kt, vt) = (w.Floats(q, 0, tokens, qWidth), w.Floats(k, 0, tokens, kvWidth), w.Floats(v, 0, tokens, kvWidth));
                var (kCache, vCache) = (w.Zeros(2 * tokens, 1, 1, headDim), w.Zeros(2 * tokens, 1, 1, headDim));
                if (pending) device.Attention.RotateAndWriteKv(qt, kt, vt, pos, cs, headDim, kCache, vCache, cacheSlot, expands[0], expands[1], expands[2]);
                else
                {
                    device.Lora.ExpandAt(qt, expands[0]);
                    device.Lora.ExpandAt(kt, expands[1]);
                    device.Lora.ExpandAt(vt, expands[2]);
                    device.Attention.RotateAndWriteKv(qt, kt, vt, pos, cs, headDim, kCache, vCache, cacheSlot);
                }
                return [qt.ToArray<float>(), kt.ToArray<float>(), vt.ToArray<float>(), kCache.ToArray<float>(), vCache.ToArray<float>()];
            }
            var separate = Run(pending: false);
            var together = Run(pending: true);
            for (int i = 0; i < separate.Length; i++) Assert.Equal(separate[i], together[i]);
        }
    }
}
