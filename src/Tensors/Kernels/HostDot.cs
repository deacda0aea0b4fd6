using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;

namespace LoraEngine.Tensors.Kernels;

/// <summary>The fixed lane order in which the CPU device's dot products sum their 16-lane accumulators.</summary>
internal static class HostDot
{
    /// <summary>
    /// Σ v[i] as a halving tree: s8[i] = v[i] + v[i+8], s4[i] = s8[i] + s8[i+4], s2[i] = s4[i] + s4[i+2], s2[0] + s2[1].
    /// Every path that computes an output uses this order, so the result does not depend on the path.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static float Reduce(Vector512<float> v)
    {
        var s8 = v.GetLower() + v.GetUpper();
        var s4 = s8.GetLower() + s8.GetUpper();
        var s2 = s4 + Vector128.Shuffle(s4, Vector128.Create(2, 3, 0, 1));
        return s2.ToScalar() + s2.GetElement(1);
    }
}
