using System.Numerics.Tensors;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// The CPU device's softmax, log-softmax and top-k (argmax is top-1): TensorPrimitives and a sorted selection, one row
/// at a time. The ops without a host version here run <see cref="SamplingOps"/>' kernels on the CPU accelerator.
/// </summary>
internal sealed class HostSampling(ComputeDevice device) : SamplingOps(device)
{
    /// <summary>y[r,i] = exp(x[r,i] − m) / Σ_j exp(x[r,j] − m) (log: x − m − log Σ exp(x − m)), m = max_j x[r,j].</summary>
    private protected override void RowWiseCore(DeviceTensor y, DeviceTensor x, bool log)
    {
        var xs = x.HostSpan<float>();
        var ys = y.HostSpan<float>();
        int vocab = x.Dim(1);
        for (int r = 0; r < x.Dim(0); r++)
        {
            var xr = xs.Slice(r * vocab, vocab);
            var yr = ys.Slice(r * vocab, vocab);
            float max = TensorPrimitives.Max(xr);
            TensorPrimitives.Subtract(xr, max, yr);
            if (log)
            {
                var tmp = HostMemory.ScratchRow(vocab);
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
    private protected override void TopKCore(DeviceTensor values, DeviceTensor indices, DeviceTensor x, int k)
    {
        var xs = x.HostSpan<float>();
        var vs = values.HostSpan<float>();
        var ix = indices.HostSpan<int>();
        int vocab = x.Dim(1);
        for (int r = 0; r < x.Dim(0); r++)
        {
            var row = xs.Slice(r * vocab, vocab);
            // A min-ordered selection of the best k seen so far, kept sorted best first (k is small).
            var bestV = vs.Slice(r * k, k);
            var bestI = ix.Slice(r * k, k);
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
