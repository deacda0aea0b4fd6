namespace LoraEngine.Bench.Serving;

/// <summary>A Llama shape for random-weight benchmarks.</summary>
public sealed record BenchShape(string Name, int Hidden, int Layers, int Heads, int KvHeads, int HeadDim, int Intermediate, int Vocab, bool Tied)
{
    /// <summary>Llama-3.2-1B: hidden 2048, 16 layers, 32 heads, 8 KV heads, head_dim 64, MLP 8192, vocab 128256, tied.</summary>
    public static readonly BenchShape Llama32_1B = new("llama-3.2-1b", 2048, 16, 32, 8, 64, 8192, 128256, true);

    /// <summary>Llama-3.1-8B: hidden 4096, 32 layers, 32 heads, 8 KV heads, head_dim 128, MLP 14336, vocab 128256, untied (16 GB in BF16).</summary>
    public static readonly BenchShape Llama31_8B = new("llama-3.1-8b", 4096, 32, 32, 8, 128, 14336, 128256, false);

    /// <summary>The llama.cpp CPU peer's shape: Llama-3.2-1B with vocab 32000 and an untied lm_head (1.10B parameters).</summary>
    public static readonly BenchShape CpuPeer = Llama32_1B with { Name = "llama-1.1b-v32k", Vocab = 32000, Tied = false };

    /// <summary>A small shape for seconds-long CPU runs.</summary>
    public static readonly BenchShape Small = new("small", 512, 4, 8, 2, 64, 1536, 4096, true);

    /// <summary>The shipped model's shape (models/vim-tiny-bf16: hidden 256, 6 layers, 8 heads, 4 KV heads, MLP 688, vocab 1024); the bench runs the shipped checkpoint itself.</summary>
    public static readonly BenchShape Shipped = new("vim-tiny-bf16", 256, 6, 8, 4, 32, 688, 1024, false);

    public static BenchShape Parse(string name) => name switch
    {
        "shipped" or "vim-tiny-bf16" => Shipped,
        "1b" or "llama-3.2-1b" => Llama32_1B,
        "8b" or "llama-3.1-8b" => Llama31_8B,
        "cpu-peer" or "llama-1.1b-v32k" => CpuPeer,
        "small" => Small,
        _ => throw new ArgumentException($"unknown shape '{name}' (1b, 8b, cpu-peer, small, shipped)", nameof(name)),
    };

    public long Parameters => (long)Vocab * Hidden * (Tied ? 1 : 2) + Hidden
        + (long)Layers * (2L * Hidden + (long)Hidden * Heads * HeadDim * 2 + 2L * Hidden * KvHeads * HeadDim + 3L * Hidden * Intermediate);
}
