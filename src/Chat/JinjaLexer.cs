using System.Text;

namespace LoraEngine.Chat.Jinja;

internal enum TokenKind { Text, OutputStart, OutputEnd, StatementStart, StatementEnd, Name, String, Number, Operator, End }

internal readonly record struct Token(TokenKind Kind, string Value, int Line, int Column);

/// <summary>Splits a template into text and tag tokens, applying whitespace control ({%- -%} {{- -}}).</summary>
internal static class Lexer
{
    static readonly string[] s_operators = ["==", "!=", "<=", ">=", "//", "**", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|", "+", "-", "*", "/", "%", "~", "<", ">", "="];

    public static List<Token> Tokenize(string src)
    {
        var tokens = new List<Token>();
        int i = 0;
        bool trimNextText = false, trimNewline = false;
        while (i < src.Length)
        {
            int open = NextTag(src, i);
            string text = src[i..(open < 0 ? src.Length : open)];
            bool atLineStart = i == 0 || src[i - 1] == '\n';
            if (trimNextText) text = text.TrimStart();
            else if (trimNewline && text.StartsWith('\n'))
            {
                text = text[1..]; // trim_blocks
                atLineStart = true;
            }
            if (open >= 0 && open + 2 < src.Length && src[open + 2] == '-') text = text.TrimEnd();
            else if (open >= 0 && src[open + 1] is '%' or '#') text = LstripBlock(text, atLineStart); // lstrip_blocks
            trimNewline = false;
            if (text.Length > 0) tokens.Add(new Token(TokenKind.Text, text, 0, 0));
            if (open < 0) break;

            char kind = src[open + 1];
            int p = open + 2;
            if (p < src.Length && src[p] == '-') p++;
            if (kind == '#')
            {
                int close = src.IndexOf("#}", p, StringComparison.Ordinal);
                if (close < 0) throw Error(src, open, "unterminated comment");
                trimNextText = close > 0 && src[close - 1] == '-';
                trimNewline = true;
                i = close + 2;
                continue;
            }
            string closer = kind == '{' ? "}}" : "%}";
            tokens.Add(new Token(kind == '{' ? TokenKind.OutputStart : TokenKind.StatementStart, "", Line(src, open), Column(src, open)));
            p = LexExpression(src, p, closer, tokens);
            trimNextText = src[p - 1] == '-';
            trimNewline = kind == '%';
            tokens.Add(new Token(kind == '{' ? TokenKind.OutputEnd : TokenKind.StatementEnd, "", Line(src, p), Column(src, p)));
            i = p + 2;
        }
        tokens.Add(new Token(TokenKind.End, "", Line(src, src.Length), 0));
        return tokens;
    }

    /// <summary>
    /// Removes spaces and tabs between the start of a line and a block tag (Jinja's lstrip_blocks); spaces after
    /// another tag on the same line stay. <paramref name="atLineStart"/>: the text begins a line.
    /// </summary>
    static string LstripBlock(string text, bool atLineStart)
    {
        int end = text.Length;
        while (end > 0 && text[end - 1] is ' ' or '\t') end--;
        return end == 0 ? (atLineStart ? "" : text) : text[end - 1] == '\n' ? text[..end] : text;
    }

    static int NextTag(string s, int from)
    {
        for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
            if (s[i + 1] is '{' or '%' or '#') return i;
        return -1;
    }

    /// <summary>Lexes expression tokens until the closer ("}}" or "%}", optionally preceded by '-'); returns the closer's index.</summary>
    static int LexExpression(string s, int i, string closer, List<Token> tokens)
    {
        while (true)
        {
            while (i < s.Length && char.IsWhiteSpace(s[i])) i++;
            if (i >= s.Length) throw Error(s, i, $"missing '{closer}'");
            if (s[i] == '-' && s.AsSpan(i + 1).StartsWith(closer)) return i + 1;
            if (s.AsSpan(i).StartsWith(closer)) return i;
            int line = Line(s, i), col = Column(s, i);
            char c = s[i];
            if (c is '\'' or '"')
            {
                var sb = new StringBuilder();
                int j = i + 1;
                for (; j < s.Length && s[j] != c; j++)
                {
                    if (s[j] == '\\' && j + 1 < s.Length)
                    {
                        j++;
                        sb.Append(s[j] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', _ => s[j] });
                    }
                    else sb.Append(s[j]);
                }
                if (j >= s.Length) throw Error(s, i, "unterminated string");
                tokens.Add(new Token(TokenKind.String, sb.ToString(), line, col));
                i = j + 1;
            }
            else if (char.IsDigit(c))
            {
                int j = i;
                while (j < s.Length && (char.IsDigit(s[j]) || (s[j] == '.' && j + 1 < s.Length && char.IsDigit(s[j + 1])))) j++;
                tokens.Add(new Token(TokenKind.Number, s[i..j], line, col));
                i = j;
            }
            else if (char.IsLetter(c) || c == '_')
            {
                int j = i;
                while (j < s.Length && (char.IsLetterOrDigit(s[j]) || s[j] == '_')) j++;
                tokens.Add(new Token(TokenKind.Name, s[i..j], line, col));
                i = j;
            }
            else
            {
                string? op = s_operators.FirstOrDefault(o => s.AsSpan(i).StartsWith(o));
                if (op is null) throw Error(s, i, $"unexpected character '{c}'");
                tokens.Add(new Token(TokenKind.Operator, op, line, col));
                i += op.Length;
            }
        }
    }

    static int Line(string s, int i) => s.AsSpan(0, Math.Min(i, s.Length)).Count('\n') + 1;

    static int Column(string s, int i) => i - s.LastIndexOf('\n', Math.Max(0, Math.Min(i, s.Length) - 1));

    public static ChatTemplateException Error(string s, int i, string what) => new($"template syntax error at line {Line(s, i)}, column {Column(s, i)}: {what}");
}
