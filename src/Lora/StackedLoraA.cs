using LoraEngine.Tensors;

namespace LoraEngine.Lora;

/// <summary>
/// The LoRA A of linears that share an input (q/k/v, gate/up; or one linear alone), every member's slots one after
/// another: [members · slots · maxRank, in], member i's A [slots, maxRank, in] from row i · slots · maxRank. As one more
/// weight of the base linears' launch it gives every slot's shrink of every token, [T, members · slots · maxRank], with
/// no launch of its own; <see cref="Tensors.Kernels.LoraOps.ExpandStacked"/> then reads each token's own slot's columns.
/// Punica's shrink (each token against its own slot's A) traded for rows a token does not need, which is why
/// <see cref="LoraLayers"/> stacks only where slots × rank is small beside the input width.
/// </summary>
internal sealed class StackedLoraA : IDisposable
{
    StackedLoraA(DeviceTensor weight, int members)
    {
        Weight = weight;
        Members = members;
    }

    /// <summary>[members · slots · maxRank, in] the members' A, zeroed until slots are set.</summary>
    public DeviceTensor Weight { get; }

    /// <summary>How many linears' A it holds.</summary>
    public int Members { get; }

    /// <summary>A zeroed stack of <paramref name="members"/> linears' A on <paramref name="device"/>.</summary>
    public static StackedLoraA Allocate(ComputeDevice device, DType dtype, int members, int slots, int maxRank, int inFeatures) =>
        new(device.Zeros(dtype, checked(members * slots * maxRank), inFeatures), members);

    /// <summary>Member <paramref name="member"/>'s A, [slots, maxRank, in]: a view the stack owns.</summary>
    public DeviceTensor Member(int member, int slots, int maxRank, int inFeatures, DType dtype)
    {
        if (member < 0 || member >= Members) throw new ArgumentOutOfRangeException(nameof(member), member, $"the stack holds {Members} linears");
        if (dtype != Weight.DType || inFeatures != Weight.Dim(1) || (long)Members * slots * maxRank != Weight.Dim(0))
            throw new ArgumentException($"a linear of {slots} slots, rank {maxRank}, {inFeatures} inputs and {dtype} is not a member of the {Weight} stack of {Members}");
        return Weight.Slice(member * slots * maxRank, slots * maxRank).Reshape(slots, maxRank, inFeatures);
    }

    /// <summary>Frees the members' A.</summary>
    public void Dispose() => Weight.Dispose();
}
