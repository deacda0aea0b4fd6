using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's linear y[t, o] = Σ_i W[o, i] · x[t, i]. On AVX-512 and AVX2 machines it is <see cref="HostGemm"/>
/// (register tiles, panels for prefill, both cores; the same bits on either kind); elsewhere a portable path streams
/// weight rows once for all tokens, one dot product per (row, token). Either way each output is computed the same way whatever the batch, so results are
/// batch-invariant.
/// </summary>
internal sealed unsafe class HostMatMul(ComputeDevice device) : MatMulOps(device)
{
    const int RowsPerTask = 16;

    private protected override void LinearCore(DeviceTensor yt, DeviceTensor xt, DeviceTensor w, int tokens, int inF, int outF)
    {
        Span<float> y = yt.HostSpan<float>(), x = xt.HostSpan<float>();
        if (HostGemm.IsSupported)
        {
            fixed (float* yp = y, xp = x)
            {
                if (w.DType == DType.F32)
                {
                    fixed (float* wp = w.HostSpan<float>()) HostGemm.Linear(yp, outF, xp, inF, null, tokens, wp, DType.F32, inF, outF, inF, accumulate: false);
                }
                else
                {
                    fixed (ushort* wp = w.HostSpan<ushort>()) HostGemm.Linear(yp, outF, xp, inF, null, tokens, wp, w.DType, inF, outF, inF, accumulate: false);
                }
            }
            return;
        }
        LinearPortable(y, x, w, tokens, inF, outF);
    }

    static void LinearPortable(Span<float> y, Span<float> x, DeviceTensor w, int tokens, int inF, int outF)
    {
        fixed (float* yp = y)
        fixed (float* xp = x)
        {
            float* yPtr = yp, xPtr = xp;
            int chunks = (outF + RowsPerTask - 1) / RowsPerTask;
            switch (w.DType)
            {
                case DType.BF16:
                {
                    fixed (ushort* wp = w.HostSpan<ushort>())
                    {
                        ushort* wPtr = wp;
                        Parallel.For(0, chunks, c => RowsBf16(yPtr, xPtr, wPtr, tokens, inF, outF, c * RowsPerTask, Math.Min(outF, (c + 1) * RowsPerTask)));
                    }
                    break;
                }
                case DType.F32:
                {
                    fixed (float* wp = w.HostSpan<float>())
                    {
                        float* wPtr = wp;
                        Parallel.For(0, chunks, c =>
                        {
                            for (int o = c * RowsPerTask; o < Math.Min(outF, (c + 1) * RowsPerTask); o++)
                            {
                                var row = new ReadOnlySpan<float>(wPtr + (long)o * inF, inF);
                                for (int t = 0; t < tokens; t++) yPtr[(long)t * outF + o] = TensorPrimitives.Dot(row, new ReadOnlySpan<float>(xPtr + (long)t * inF, inF));
                            }
                        });
                    }
                    break;
                }
                default:
                {
                    fixed (ushort* wp = w.HostSpan<ushort>())
                    {
                        ushort* wPtr = wp;
                        Parallel.For(0, chunks, () => new float[inF], (c, _, row) =>
                        {
                            for (int o = c * RowsPerTask; o < Math.Min(outF, (c + 1) * RowsPerTask); o++)
                            {
                                HalfBits.F16ToFloat(new ReadOnlySpan<ushort>(wPtr + (long)o * inF, inF), row);
                                for (int t = 0; t < tokens; t++) yPtr[(long)t * outF + o] = TensorPrimitives.Dot(row, new ReadOnlySpan<float>(xPtr + (long)t * inF, inF));
                            }
                            return row;
                        }, _ => { });
                    }
                    break;
                }
            }
        }
    }

    static void RowsBf16(float* y, float* x, ushort* w, int tokens, int inF, int outF, int oStart, int oEnd)
    {
        for (int o = oStart; o < oEnd; o++)
        {
            ushort* row = w + (long)o * inF;
            for (int t = 0; t < tokens; t++) y[(long)t * outF + o] = DotBf16(row, x + (long)t * inF, inF);
        }
    }

    /// <summary>Σ bf16(w[i]) · x[i], two Vector512 accumulators then a scalar tail.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    static float DotBf16(ushort* w, float* x, int n)
    {
        int i = 0;
        float sum = 0;
        if (Vector512.IsHardwareAccelerated)
        {
            var acc0 = Vector512<float>.Zero;
            var acc1 = Vector512<float>.Zero;
            for (; i <= n - 32; i += 32)
            {
                var bits = Vector512.Load(w + i);
                var (lo, hi) = Vector512.Widen(bits);
                acc0 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(lo, 16).AsSingle(), Vector512.Load(x + i), acc0);
                acc1 = Vector512.FusedMultiplyAdd(Vector512.ShiftLeft(hi, 16).AsSingle(), Vector512.Load(x + i + 16), acc1);
            }
            sum = Vector512.Sum(acc0 + acc1);
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            var acc0 = Vector256<float>.Zero;
            var acc1 = Vector256<float>.Zero;
            for (; i <= n - 16; i += 16)
            {
                var bits = Vector256.Load(w + i);
                var (lo, hi) = Vector256.Widen(bits);
                acc0 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(lo, 16).AsSingle(), Vector256.Load(x + i), acc0);
                acc1 = Vector256.FusedMultiplyAdd(Vector256.ShiftLeft(hi, 16).AsSingle(), Vector256.Load(x + i + 8), acc1);
            }
            sum = Vector256.Sum(acc0 + acc1);
        }
        for (; i < n; i++) sum += BitConverter.Int32BitsToSingle(w[i] << 16) * x[i];
        return sum;
    }
}
