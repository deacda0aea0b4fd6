using System.Buffers;
using System.Buffers.Binary;
using System.Security.Cryptography;
using System.Text;

namespace LoraEngine.Core;

/// <summary>
/// The prefix cache's keys (vLLM's hash_block_tokens): a full block's key is a hash of its parent block's key, the
/// sequence's extra key (what besides the tokens decides the block's K/V: the adapter's content identity) and the
/// block's token ids, so equal keys mean equal tokens at equal positions computed by the same weights. SHA-256 cut to
/// 128 bits: a collision would hand one request another's K/V, so no fast non-cryptographic hash.
/// </summary>
internal static class BlockHasher
{
    /// <summary>The parent of a sequence's first block.</summary>
    public static readonly UInt128 Root = UInt128.Zero;

    /// <summary>An extra key joined with a request's cache_salt: SHA-256(extraKey ‖ UTF-8 salt) cut to 128 bits.</summary>
    public static UInt128 Salted(UInt128 extraKey, string salt)
    {
        byte[] input = new byte[16 + Encoding.UTF8.GetByteCount(salt)];
        BinaryPrimitives.WriteUInt128LittleEndian(input, extraKey);
        Encoding.UTF8.GetBytes(salt, input.AsSpan(16));
        return BinaryPrimitives.ReadUInt128LittleEndian(SHA256.HashData(input));
    }

    /// <summary>key = SHA-256(parent ‖ extraKey ‖ tokens) cut to 128 bits.</summary>
    public static UInt128 Hash(UInt128 parent, UInt128 extraKey, ReadOnlySpan<int> tokens)
    {
        int length = 32 + 4 * tokens.Length;
        byte[]? rented = length > 1024 ? ArrayPool<byte>.Shared.Rent(length) : null;
        Span<byte> input = rented != null ? rented.AsSpan(0, length) : stackalloc byte[length];
        BinaryPrimitives.WriteUInt128LittleEndian(input, parent);
        BinaryPrimitives.WriteUInt128LittleEndian(input[16..], extraKey);
        for (int i = 0; i < tokens.Length; i++) BinaryPrimitives.WriteInt32LittleEndian(input[(32 + 4 * i)..], tokens[i]);
        Span<byte> digest = stackalloc byte[32];
        SHA256.HashData(input, digest);
        if (rented != null) ArrayPool<byte>.Shared.Return(rented);
        return BinaryPrimitives.ReadUInt128LittleEndian(digest);
    }
}
