using System.Globalization;

namespace LoraEngine.Chat.Jinja;

internal abstract record Node;
internal sealed record TextNode(string Text) : Node;
internal sealed record OutputNode(Expr Value) : Node;
internal sealed record IfNode(List<(Expr Condition, List<Node> Body)> Branches, List<Node>? Else) : Node;
internal sealed record ForNode(List<string> Vars, Expr Iterable, List<Node> Body, List<Node>? Else) : Node;
internal sealed record SetNode(string Name, string? Attribute, Expr Value) : Node;

internal abstract record Expr;
internal sealed record Literal(object? Value) : Expr;
internal sealed record NameExpr(string Name) : Expr;
internal sealed record ListExpr(List<Expr> Items) : Expr;
internal sealed record DictExpr(List<(Expr Key, Expr Value)> Items) : Expr;
internal sealed record AttrExpr(Expr Target, string Name) : Expr;
internal sealed record IndexExpr(Expr Target, Expr Index) : Expr;
internal sealed record SliceExpr(Expr Target, Expr? Start, Expr? Stop) : Expr;
internal sealed record CallExpr(Expr Function, List<Expr> Args, List<(string Name, Expr Value)> Kwargs) : Expr;
internal sealed record FilterExpr(Expr Value, string Name, List<Expr> Args) : Expr;
internal sealed record TestExpr(Expr Value, string Name, bool Negate) : Expr;
internal sealed record UnaryExpr(string Op, Expr Operand) : Expr;
internal sealed record BinaryExpr(string Op, Expr Left, Expr Right) : Expr;
internal sealed record ConditionalExpr(Expr Condition, Expr Then, Expr? Else) : Expr;

/// <summary>Recursive-descent parser over the lexer's tokens, with Jinja's precedence (filters bind tightest).</summary>
internal sealed class Parser(List<Token> tokens)
{
    int _pos;

    Token Peek => tokens[_pos];

    Token Next() => tokens[_pos++];

    public List<Node> ParseTemplate()
    {
        var body = ParseBody(out string? end);
        if (end != null) throw Error($"unexpected '{end}'");
        return body;
    }

    /// <summary>Parses nodes until a block keyword this level does not own (returned in <paramref name="end"/>).</summary>
    List<Node> ParseBody(out string? end, params string[] enders)
    {
        var nodes = new List<Node>();
        while (true)
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokenKind.End:
                    if (enders.Length > 0) throw Error($"missing '{enders[^1]}'", t);
                    end = null;
                    _pos--;
                    return nodes;
                case TokenKind.Text:
                    nodes.Add(new TextNode(t.Value));
                    break;
                case TokenKind.OutputStart:
                    nodes.Add(new OutputNode(ParseExpression()));
                    Expect(TokenKind.OutputEnd);
                    break;
                case TokenKind.StatementStart:
                    var keyword = Expect(TokenKind.Name).Value;
                    if (enders.Contains(keyword))
                    {
                        end = keyword;
                        return nodes;
                    }
                    nodes.Add(keyword switch
                    {
                        "if" => ParseIf(),
                        "for" => ParseFor(),
                        "set" => ParseSet(),
                        _ => throw Error($"unknown or misplaced tag '{keyword}'", t),
                    });
                    break;
                default:
                    throw Error("unexpected token", t);
            }
        }
    }

    Node ParseIf()
    {
        var branches = new List<(Expr, List<Node>)>();
        var condition = ParseExpression();
        Expect(TokenKind.StatementEnd);
        while (true)
        {
            var body = ParseBody(out var end, "elif", "else", "endif");
            branches.Add((condition, body));
            if (end == "elif")
            {
                condition = ParseExpression();
                Expect(TokenKind.StatementEnd);
                continue;
            }
            List<Node>? elseBody = null;
            if (end == "else")
            {
                Expect(TokenKind.StatementEnd);
                elseBody = ParseBody(out _, "endif");
            }
            Expect(TokenKind.StatementEnd);
            return new IfNode(branches, elseBody);
        }
    }

    Node ParseFor()
    {
        var vars = new List<string> { Expect(TokenKind.Name).Value };
        while (Accept(",")) vars.Add(Expect(TokenKind.Name).Value);
        if (Expect(TokenKind.Name).Value != "in") throw Error("expected 'in'");
        var iterable = ParseOr();
        Expect(TokenKind.StatementEnd);
        var body = ParseBody(out var end, "else", "endfor");
        List<Node>? elseBody = null;
        if (end == "else")
        {
            Expect(TokenKind.StatementEnd);
            elseBody = ParseBody(out _, "endfor");
        }
        Expect(TokenKind.StatementEnd);
        return new ForNode(vars, iterable, body, elseBody);
    }

    Node ParseSet()
    {
        string name = Expect(TokenKind.Name).Value;
        string? attr = Accept(".") ? Expect(TokenKind.Name).Value : null;
        if (!Accept("=")) throw Error("expected '=' in set");
        var value = ParseExpression();
        Expect(TokenKind.StatementEnd);
        return new SetNode(name, attr, value);
    }

    Expr ParseExpression()
    {
        var e = ParseOr();
        if (Peek is { Kind: TokenKind.Name, Value: "if" })
        {
            _pos++;
            var condition = ParseOr();
            Expr? otherwise = null;
            if (Peek is { Kind: TokenKind.Name, Value: "else" })
            {
                _pos++;
                otherwise = ParseExpression();
            }
            return new ConditionalExpr(condition, e, otherwise);
        }
        return e;
    }

    Expr ParseOr()
    {
        var e = ParseAnd();
        while (AcceptName("or")) e = new BinaryExpr("or", e, ParseAnd());
        return e;
    }

    Expr ParseAnd()
    {
        var e = ParseNot();
        while (AcceptName("and")) e = new BinaryExpr("and", e, ParseNot());
        return e;
    }

    Expr ParseNot() => AcceptName("not") ? new UnaryExpr("not", ParseNot()) : ParseComparison();

    Expr ParseComparison()
    {
        var e = ParseConcat();
        while (true)
        {
            if (Peek.Kind == TokenKind.Operator && Peek.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
                e = new BinaryExpr(Next().Value, e, ParseConcat());
            else if (AcceptName("in")) e = new BinaryExpr("in", e, ParseConcat());
            else if (Peek is { Kind: TokenKind.Name, Value: "not" } && tokens[_pos + 1] is { Kind: TokenKind.Name, Value: "in" })
            {
                _pos += 2;
                e = new UnaryExpr("not", new BinaryExpr("in", e, ParseConcat()));
            }
            else if (AcceptName("is"))
            {
                bool negate = AcceptName("not");
                string test = Expect(TokenKind.Name).Value;
                e = new TestExpr(e, test, negate);
            }
            else return e;
        }
    }

    Expr ParseConcat()
    {
        var e = ParseAdditive();
        while (Accept("~")) e = new BinaryExpr("~", e, ParseAdditive());
        return e;
    }

    Expr ParseAdditive()
    {
        var e = ParseMultiplicative();
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "+" or "-") e = new BinaryExpr(Next().Value, e, ParseMultiplicative());
        return e;
    }

    Expr ParseMultiplicative()
    {
        var e = ParseUnary();
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "*" or "/" or "//" or "%") e = new BinaryExpr(Next().Value, e, ParseUnary());
        return e;
    }

    Expr ParseUnary() => Accept("-") ? new UnaryExpr("-", ParseUnary()) : Accept("+") ? ParseUnary() : ParseFiltered();

    Expr ParseFiltered()
    {
        var e = ParsePostfix(ParsePrimary());
        while (Accept("|"))
        {
            string name = Expect(TokenKind.Name).Value;
            var args = new List<Expr>();
            if (Accept("("))
            {
                if (!Accept(")"))
                {
                    do args.Add(ParseExpression()); while (Accept(","));
                    Expect(")");
                }
            }
            e = ParsePostfix(new FilterExpr(e, name, args));
        }
        return e;
    }

    Expr ParsePostfix(Expr e)
    {
        while (true)
        {
            if (Accept(".")) e = new AttrExpr(e, Expect(TokenKind.Name).Value);
            else if (Accept("["))
            {
                Expr? start = Peek.Value == ":" ? null : ParseExpression();
                if (Accept(":"))
                {
                    Expr? stop = Peek.Value == "]" ? null : ParseExpression();
                    Expect("]");
                    e = new SliceExpr(e, start, stop);
                }
                else
                {
                    Expect("]");
                    e = new IndexExpr(e, start!);
                }
            }
            else if (Accept("("))
            {
                var args = new List<Expr>();
                var kwargs = new List<(string, Expr)>();
                if (!Accept(")"))
                {
                    do
                    {
                        if (Peek.Kind == TokenKind.Name && tokens[_pos + 1] is { Kind: TokenKind.Operator, Value: "=" })
                        {
                            string name = Next().Value;
                            _pos++;
                            kwargs.Add((name, ParseExpression()));
                        }
                        else args.Add(ParseExpression());
                    }
                    while (Accept(","));
                    Expect(")");
                }
                e = new CallExpr(e, args, kwargs);
            }
            else return e;
        }
    }

    Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.String:
                string s = t.Value;
                while (Peek.Kind == TokenKind.String) s += Next().Value; // adjacent literals concatenate
                return new Literal(s);
            case TokenKind.Number:
                return t.Value.Contains('.')
                    ? new Literal(double.Parse(t.Value, CultureInfo.InvariantCulture))
                    : new Literal(long.Parse(t.Value, CultureInfo.InvariantCulture));
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new Literal(true),
                    "false" or "False" => new Literal(false),
                    "none" or "None" => new Literal(null),
                    _ => new NameExpr(t.Value),
                };
            case TokenKind.Operator when t.Value == "(":
                var inner = ParseExpression();
                Expect(")");
                return inner;
            case TokenKind.Operator when t.Value == "[":
                var items = new List<Expr>();
                if (!Accept("]"))
                {
                    do
                    {
                        if (Peek.Value == "]") break;
                        items.Add(ParseExpression());
                    }
                    while (Accept(","));
                    Expect("]");
                }
                return new ListExpr(items);
            case TokenKind.Operator when t.Value == "{":
                var pairs = new List<(Expr, Expr)>();
                if (!Accept("}"))
                {
                    do
                    {
                        var key = ParseExpression();
                        Expect(":");
                        pairs.Add((key, ParseExpression()));
                    }
                    while (Accept(","));
                    Expect("}");
                }
                return new DictExpr(pairs);
            default:
                throw Error("unexpected token in expression", t);
        }
    }

    bool Accept(string op)
    {
        if (Peek.Kind != TokenKind.Operator || Peek.Value != op) return false;
        _pos++;
        return true;
    }

    bool AcceptName(string name)
    {
        if (Peek.Kind != TokenKind.Name || Peek.Value != name) return false;
        _pos++;
        return true;
    }

    Token Expect(TokenKind kind)
    {
        var t = Next();
        return t.Kind == kind ? t : throw Error($"expected {kind}", t);
    }

    void Expect(string op)
    {
        if (!Accept(op)) throw Error($"expected '{op}'", Peek);
    }

    ChatTemplateException Error(string what, Token? at = null)
    {
        var t = at ?? Peek;
        return new ChatTemplateException($"template syntax error at line {t.Line}, column {t.Column}: {what}{(t.Value.Length > 0 ? $" (near '{t.Value}')" : "")}");
    }
}
