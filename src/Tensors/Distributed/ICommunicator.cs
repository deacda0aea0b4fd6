namespace LoraEngine.Tensors.Distributed;

/// <summary>
/// One rank's handle on a tensor-parallel group (NCCL's communicator, torch.distributed's process group): every rank of
/// the group calls each collective with its own tensor, in the same order, and the call returns once that rank's
/// result is in place. A collective is deterministic: every rank gets the same bits, summed in rank order.
/// </summary>
public interface ICommunicator
{
    /// <summary>This rank's index in the group, 0 ≤ Rank &lt; WorldSize; rank 0 is the driver (it computes the logits).</summary>
    int Rank { get; }

    /// <summary>Ranks in the group.</summary>
    int WorldSize { get; }

    /// <summary>tensor = Σ over ranks r = 0, 1, … (in that order) of rank r's tensor; F32, the same shape on every rank.</summary>
    void AllReduceSum(DeviceTensor tensor);

    /// <summary>
    /// output[t, r·n .. (r+1)·n) = rank r's input[t, 0 .. n) for every row t (torch's all_gather along the last dimension).
    /// </summary>
    /// <param name="output">[T, WorldSize·n] F32</param>
    /// <param name="input">[T, n] F32, the same shape on every rank</param>
    void AllGather(DeviceTensor output, DeviceTensor input);
}

/// <summary>The group of one: both collectives leave the tensors as they are (the single-device path calls nothing else).</summary>
public sealed class SingleRankCommunicator : ICommunicator
{
    /// <summary>The one instance.</summary>
    public static readonly SingleRankCommunicator Instance = new();

    SingleRankCommunicator()
    {
    }

    /// <summary>Always 0.</summary>
    public int Rank => 0;

    /// <summary>Always 1.</summary>
    public int WorldSize => 1;

    /// <summary>Nothing to add: the tensor is already the sum.</summary>
    public void AllReduceSum(DeviceTensor tensor)
    {
    }

    /// <summary>output = input (a device copy; nothing when they are the same tensor).</summary>
    public void AllGather(DeviceTensor output, DeviceTensor input)
    {
        if (!ReferenceEquals(output, input)) output.CopyFrom(input);
    }
}
