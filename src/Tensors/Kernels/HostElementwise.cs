using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's residual add, SwiGLU and embedding gather: TensorPrimitives over host memory, SwiGLU on both cores
/// for prefill-sized inputs. Same math as <see cref="ElementwiseOps"/>' kernels; nothing allocated per call.
/// </summary>
internal sealed unsafe class HostElementwise(ComputeDevice device) : ElementwiseOps(device)
{
    /// <summary>Elements below which an elementwise op is not worth the other core (a decode step's vectors).</summary>
    const int ParallelElements = 1 << 16;

    private protected override void AddInPlaceCore(DeviceTensor x, DeviceTensor y) => AddInPlace(x.HostSpan<float>(), y.HostSpan<float>());

    internal static void AddInPlace(Span<float> x, ReadOnlySpan<float> y) => TensorPrimitives.Add(x, y, x);

    /// <summary>output = silu(gate) · up = gate · sigmoid(gate) · up, in pieces of 1024 (output may alias gate or up).</summary>
    private protected override void SwiGluCore(DeviceTensor output, DeviceTensor gate, DeviceTensor up)
    {
        fixed (float* o = output.HostSpan<float>(), g = gate.HostSpan<float>(), u = up.HostSpan<float>())
        {
            var job = SwiGluJob.ForThisThread;
            job.Output = o;
            job.Gate = g;
            job.Up = u;
            job.Length = checked((int)gate.Length);
            int pieces = (job.Length + SwiGluJob.Piece - 1) / SwiGluJob.Piece;
            if (job.Length < ParallelElements) for (int i = 0; i < pieces; i++) job.Run(i);
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

    private protected override void EmbeddingCore(DeviceTensor output, DeviceTensor ids, DeviceTensor table)
    {
        var o = output.HostSpan<float>();
        var idSpan = ids.HostSpan<int>();
        int vocab = table.Dim(0), dim = table.Dim(1);
        for (int t = 0; t < idSpan.Length; t++)
        {
            var dst = o.Slice(t * dim, dim);
            int id = idSpan[t];
            if (id < 0 || id >= vocab) dst.Clear();
            else HostMemory.WeightRow(table, (long)id * dim, dim, dst).CopyTo(dst);
        }
    }
}
