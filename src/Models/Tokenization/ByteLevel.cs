namespace LoraEngine.Models.Tokenization;

/// <summary>GPT-2's byte ↔ printable-unicode table used by byte-level BPE vocabularies.</summary>
internal static class ByteLevel
{
    public static readonly char[] ByteToChar = Build();

    static char[] Build()
    {
        var map = new char[256];
        int n = 0;
        for (int b = 0; b < 256; b++)
        {
            bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
            map[b] = printable ? (char)b : (char)(256 + n++);
        }
        return map;
    }

    /// <summary>The raw bytes a vocabulary entry stands for.</summary>
    public static byte[] ToBytes(string token)
    {
        var bytes = new byte[token.Length];
        for (int i = 0; i < token.Length; i++)
        {
            char c = token[i];
            int b = c < 256 && ByteToChar[c] == c ? c : Array.IndexOf(ByteToChar, c);
            if (b < 0) throw new InvalidDataException($"vocabulary entry '{token}' is not byte-level");
            bytes[i] = (byte)b;
        }
        return bytes;
    }
}
