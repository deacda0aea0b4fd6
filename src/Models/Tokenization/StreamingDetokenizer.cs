using System.Text;

namespace LoraEngine.Models.Tokenization;

/// <summary>
/// Turns token ids into text one at a time for streaming. Bytes of a UTF-8 character split across tokens are
/// held back until the character completes, so no half character (U+FFFD) is ever emitted.
/// </summary>
public sealed class StreamingDetokenizer
{
    readonly HfTokenizer _tokenizer;
    readonly bool _skipSpecialTokens;
    readonly Decoder _decoder = new UTF8Encoding(false, false).GetDecoder();

    internal StreamingDetokenizer(HfTokenizer tokenizer, bool skipSpecialTokens)
    {
        _tokenizer = tokenizer;
        _skipSpecialTokens = skipSpecialTokens;
    }

    /// <summary>The text that token <paramref name="id"/> completes (possibly empty).</summary>
    public string Push(int id)
    {
        if (_skipSpecialTokens && _tokenizer.IsSpecial(id)) return "";
        var bytes = _tokenizer.TokenBytes(id);
        var chars = new char[bytes.Length + 4];
        int n = _decoder.GetChars(bytes, 0, bytes.Length, chars, 0, flush: false);
        return new string(chars, 0, n);
    }

    /// <summary>Whatever is held back at the end of the stream (an incomplete character becomes U+FFFD).</summary>
    public string Flush()
    {
        var chars = new char[8];
        int n = _decoder.GetChars([], 0, 0, chars, 0, flush: true);
        return new string(chars, 0, n);
    }
}
