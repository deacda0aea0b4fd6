using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Algorithms.ScanReduceOperations;

namespace LoraEngine.Tensors.Kernels;

/// <summary>
/// How the threads of a group see their 32-wide warps and exchange values: each device's own, chosen when its kernels
/// are loaded (<see cref="ComputeDevice.UsesGroupLanes"/>), as <see cref="ITensorCoreOps"/> chooses the MMA. A kernel
/// calls every exchange from control flow that is uniform over its group: <see cref="GroupLanes"/> meets at group
/// barriers. The butterflies (<see cref="Xor(float, int)"/>) give the same bits either way; the group reductions keep
/// a fixed order per implementation.
/// </summary>
internal interface ILanes
{
    /// <summary>This thread's lane in its warp, 0–31.</summary>
    int Lane { get; }

    /// <summary>This thread's warp in its (one-dimensional) group.</summary>
    int WarpIdx { get; }

    /// <summary>Whether an exchange needs every warp of the group (a kernel whose warps diverge then runs its rounds over all of them).</summary>
    bool GroupWide { get; }

    /// <summary>The value of lane <c>Lane ^ mask</c> (mask &lt; 32).</summary>
    float Xor(float value, int mask);

    /// <summary>The value of lane <c>Lane ^ mask</c> (mask &lt; 32).</summary>
    int Xor(int value, int mask);

    /// <summary>The largest value over the group; every thread gets it.</summary>
    float GroupMax(float value);

    /// <summary>The sum over the group; every thread gets it.</summary>
    float GroupSum(float value);

    /// <summary>The sum over the group; every thread gets it.</summary>
    double GroupSum(double value);

    /// <summary>The sum over the group; every thread gets it.</summary>
    int GroupSum(int value);
}

/// <summary>Hardware warps (CUDA, and ILGPU's CPU accelerator, which emulates them): shuffles and ILGPU's group reductions.</summary>
internal readonly struct WarpLanes : ILanes
{
    public int Lane => Warp.LaneIdx;
    public int WarpIdx => Warp.WarpIdx;
    public bool GroupWide => false;
    public float Xor(float value, int mask) => Warp.ShuffleXor(value, mask);
    public int Xor(int value, int mask) => Warp.ShuffleXor(value, mask);
    public float GroupMax(float value) => GroupExtensions.AllReduce<float, MaxFloat>(value);
    public float GroupSum(float value) => GroupExtensions.AllReduce<float, AddFloat>(value);
    public double GroupSum(double value) => GroupExtensions.AllReduce<double, AddDouble>(value);
    public int GroupSum(int value) => GroupExtensions.AllReduce<int, AddInt32>(value);
}

/// <summary>
/// Warps drawn on the group for OpenCL devices without usable sub-groups (ILGPU 1.5.3 writes shuffles for Intel's
/// OpenCL only, its group reductions need OpenCL C 2.0, and pocl's sub-group is the whole group's x dimension): lanes
/// are thread indices mod 32 and every exchange goes through shared memory between two group barriers.
/// </summary>
internal readonly struct GroupLanes : ILanes
{
    const int MaxGroupSize = 1024;

    public int Lane => Group.IdxX & 31;
    public int WarpIdx => Group.IdxX >> 5;
    public bool GroupWide => true;

    public float Xor(float value, int mask) => Interop.IntAsFloat((uint)Exchange((int)Interop.FloatAsInt(value), mask));

    public int Xor(int value, int mask) => Exchange(value, mask);

    static int Exchange(int value, int mask)
    {
        var slots = SharedMemory.Allocate<int>(MaxGroupSize);
        slots[Group.IdxX] = value;
        Group.Barrier();
        int other = slots[Group.IdxX ^ mask];
        Group.Barrier(); // the next exchange from this call site writes the same slots
        return other;
    }

    public float GroupMax(float value) => GroupReduce<float, MaxFloat>(value);
    public float GroupSum(float value) => GroupReduce<float, AddFloat>(value);
    public double GroupSum(double value) => GroupReduce<double, AddDouble>(value);
    public int GroupSum(int value) => GroupReduce<int, AddInt32>(value);

    /// <summary>The group's values combined in thread order by one thread (pocl runs a group's threads one after another anyway).</summary>
    static T GroupReduce<T, TOp>(T value) where T : unmanaged where TOp : struct, IScanReduceOperation<T>
    {
        var slots = SharedMemory.Allocate<T>(MaxGroupSize + 1);
        slots[Group.IdxX] = value;
        Group.Barrier();
        if (Group.IdxX == 0)
        {
            TOp op = default;
            T total = slots[0];
            for (int i = 1; i < Group.DimX; i++) total = op.Apply(total, slots[i]);
            slots[MaxGroupSize] = total;
        }
        Group.Barrier();
        T result = slots[MaxGroupSize];
        Group.Barrier(); // the next reduction from this call site writes the same slots
        return result;
    }
}
