using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// Vectorised host implementations that the CPU device uses instead of ILGPU's CPU accelerator where they are
/// faster (ComputeDevice.UseHostFastPaths). Same math as the kernels; tests check both against the references.
/// Nothing here allocates per call: scratch is on the stack or per thread.
/// </summary>
internal static unsafe class HostKernels
{
    /// <summary>Elements below which an elementwise op is not worth the other core (a decode step's vectors).</summary>
    const int ParallelElements = 1 << 16;

    [ThreadStatic] static float[]? t_row;

    /// <summary>A per-thread F32 buffer of at least <paramref name="length"/> elements (contents undefined).</summary>
    static Span<float> ScratchRow(int length)
    {
        if (t_row == null || t_row.Length < length) t_row = new float[Math.Max(length, 4096)];
        return t_row.AsSpan(0, length);
    }

    /// <summary>The <paramref name="length"/> weights from element <paramref name="offset"/> of a float weight tensor as F32 (a copy for F16/BF16).</summary>
    public static ReadOnlySpan<float> WeightRow(DeviceTensor weight, long offset, int length, Span<float> scratch)
    {
        if (weight.DType == DType.F32) return weight.HostSpan<float>().Slice(checked((int)offset), length);
        HalfBits.ToFloat(weight.DType, weight.HostSpan<ushort>().Slice(checked((int)offset), length), scratch[..length]);
        return scratch[..length];
    }

    public static void RmsNorm(Span<float> y, Span<float> x, DeviceTensor weight, int dim, float eps)
    {
        var w = WeightRow(weight, 0, dim, ScratchRow(dim));
        int tokens = x.Length / dim;
        for (int t = 0; t < tokens; t++)
        {
            var xr = x.Slice(t * dim, dim);
            var yr = y.Slice(t * dim, dim);
            float scale = 1f / MathF.Sqrt(TensorPrimitives.SumOfSquares<float>(xr) / dim + eps);
            TensorPrimitives.Multiply(xr, scale, yr);
            TensorPrimitives.Multiply(yr, w, yr);
        }
    }

    public static void AddInPlace(Span<float> x, Span<float> y) => TensorPrimitives.Add(x, y, x);

    /// <summary>output = silu(gate) · up = gate · sigmoid(gate) · up, in pieces of 1024 (output may alias gate or up).</summary>
    public static void SwiGlu(Span<float> output, Span<float> gate, Span<float> up)
    {
        fixed (float* o = output, g = gate, u = up)
        {
            var job = SwiGluJob.ForThisThread;
            job.Output = o;
            job.Gate = g;
            job.Up = u;
            job.Length = gate.Length;
            int pieces = (gate.Length + SwiGluJob.Piece - 1) / SwiGluJob.Piece;
            if (gate.Length < ParallelElements) for (int i = 0; i < pieces; i++) job.Run(i);
            else HostParallel.For(pieces, job);
        }
    }

    sealed class SwiGluJob : HostJob
    {
        public const int Piece = 1024;

        [ThreadStatic] static SwiGluJob? t_job;

        public static SwiGluJob ForThisThread => t_job ??= new SwiGluJob();

        public float* Output, Gate, Up;
        public int Length;

        public override void Run(int piece)
        {
            int start = piece * Piece, n = Math.Min(Piece, Length - start);
            var g = new ReadOnlySpan<float>(Gate + start, n);
            Span<float> tmp = stackalloc float[n];
            TensorPrimitives.Sigmoid(g, tmp);
            TensorPrimitives.Multiply(tmp, g, tmp);
            TensorPrimitives.Multiply(tmp, new ReadOnlySpan<float>(Up + start, n), new Span<float>(Output + start, n));
        }
    }

    public static void Embedding(Span<float> output, Span<int> ids, DeviceTensor table, int dim, int vocab)
    {
        for (int t = 0; t < ids.Length; t++)
        {
            var dst = output.Slice(t * dim, dim);
            int id = ids[t];
            if (id < 0 || id >= vocab) dst.Clear();
            else WeightRow(table, (long)id * dim, dim, dst).CopyTo(dst);
        }
    }

    public static void Rope(Span<float> x, Span<int> positions, Span<float> invFreq, int width, int headDim)
    {
        int half = headDim / 2;
        Span<float> cos = stackalloc float[half];
        Span<float> sin = stackalloc float[half];
        for (int t = 0; t < positions.Length; t++)
        {
            for (int j = 0; j < half; j++)
            {
                double angle = (double)positions[t] * invFreq[j];
                cos[j] = (float)Math.Cos(angle);
                sin[j] = (float)Math.Sin(angle);
            }
            for (int head = 0; head < width / headDim; head++)
            {
                var v = x.Slice(t * width + head * headDim, headDim);
                for (int j = 0; j < half; j++)
                {
                    float x1 = v[j], x2 = v[j + half];
                    v[j] = x1 * cos[j] - x2 * sin[j];
                    v[j + half] = x2 * cos[j] + x1 * sin[j];
                }
            }
        }
    }

    public static void SoftmaxRows(Span<float> y, Span<float> x, int vocab, bool log)
    {
        for (int r = 0; r < x.Length / vocab; r++)
        {
            var xr = x.Slice(r * vocab, vocab);
            var yr = y.Slice(r * vocab, vocab);
            float max = TensorPrimitives.Max(xr);
            TensorPrimitives.Subtract(xr, max, yr);
            if (log)
            {
                var tmp = ScratchRow(vocab);
                TensorPrimitives.Exp(yr, tmp);
                float logSum = MathF.Log(TensorPrimitives.Sum(tmp));
                TensorPrimitives.Subtract(yr, logSum, yr);
            }
            else
            {
                TensorPrimitives.Exp(yr, yr);
                TensorPrimitives.Divide(yr, TensorPrimitives.Sum(yr), yr);
            }
        }
    }

    /// <summary>Top k per row by (value desc, index asc); NaN ranks last.</summary>
    public static void TopKRows(Span<float> values, Span<int> indices, Span<float> x, int vocab, int k)
    {
        for (int r = 0; r < x.Length / vocab; r++)
        {
            var row = x.Slice(r * vocab, vocab);
            // A min-ordered selection of the best k seen so far, kept sorted best first (k is small).
            var bestV = values.Slice(r * k, k);
            var bestI = indices.Slice(r * k, k);
            int count = 0;
            for (int i = 0; i < vocab; i++)
            {
                float v = float.IsNaN(row[i]) ? float.NegativeInfinity : row[i];
                if (count == k && !(v > bestV[k - 1])) continue; // equal values keep the earlier (lower) index
                int at = count < k ? count++ : k - 1;
                while (at > 0 && v > bestV[at - 1])
                {
                    bestV[at] = bestV[at - 1];
                    bestI[at] = bestI[at - 1];
                    at--;
                }
                bestV[at] = v;
                bestI[at] = i;
            }
        }
    }
}
