using System.Collections;
using System.Globalization;
using System.Text;
using System.Text.Json;

namespace LoraEngine.Chat.Jinja;

/// <summary>An undefined variable: renders empty, is falsy, and is what "is defined" tests against.</summary>
internal sealed class Undefined
{
    public static readonly Undefined Value = new();

    public override string ToString() => "";
}

/// <summary>A namespace() object: attributes settable from inside loops.</summary>
internal sealed class Namespace : Dictionary<string, object?>;

/// <summary>Evaluates parsed templates over Python-like values: string, long, double, bool, null, lists and dicts.</summary>
internal sealed class Renderer(Dictionary<string, object?> globals)
{
    readonly List<Dictionary<string, object?>> _scopes = [globals];

    public string Render(IReadOnlyList<Node> body)
    {
        var sb = new StringBuilder();
        Exec(body, sb);
        return sb.ToString();
    }

    void Exec(IReadOnlyList<Node> nodes, StringBuilder sb)
    {
        foreach (var node in nodes)
        {
            switch (node)
            {
                case TextNode t:
                    sb.Append(t.Text);
                    break;
                case OutputNode o:
                    sb.Append(Str(Eval(o.Value)));
                    break;
                case IfNode i:
                    var branch = i.Branches.FirstOrDefault(b => Truthy(Eval(b.Condition)));
                    if (branch.Body != null) Exec(branch.Body, sb);
                    else if (i.Else != null) Exec(i.Else, sb);
                    break;
                case ForNode f:
                    ExecFor(f, sb);
                    break;
                case SetNode s:
                    var value = Eval(s.Value);
                    if (s.Attribute is null) _scopes[^1][s.Name] = value;
                    else if (Lookup(s.Name) is Namespace ns) ns[s.Attribute] = value;
                    else throw new ChatTemplateException($"cannot set attribute '{s.Attribute}' of '{s.Name}': not a namespace");
                    break;
            }
        }
    }

    void ExecFor(ForNode f, StringBuilder sb)
    {
        var items = Items(Eval(f.Iterable)).ToList();
        if (items.Count == 0)
        {
            if (f.Else != null) Exec(f.Else, sb);
            return;
        }
        for (int i = 0; i < items.Count; i++)
        {
            var scope = new Dictionary<string, object?>
            {
                ["loop"] = new Dictionary<string, object?>
                {
                    ["index0"] = (long)i, ["index"] = (long)i + 1, ["first"] = i == 0, ["last"] = i == items.Count - 1,
                    ["length"] = (long)items.Count, ["revindex"] = (long)(items.Count - i), ["revindex0"] = (long)(items.Count - i - 1),
                    ["previtem"] = i > 0 ? items[i - 1] : Undefined.Value, ["nextitem"] = i + 1 < items.Count ? items[i + 1] : Undefined.Value,
                },
            };
            if (f.Vars.Count == 1) scope[f.Vars[0]] = items[i];
            else
            {
                var parts = Items(items[i]).ToList();
                for (int v = 0; v < f.Vars.Count; v++) scope[f.Vars[v]] = v < parts.Count ? parts[v] : Undefined.Value;
            }
            _scopes.Add(scope);
            Exec(f.Body, sb);
            _scopes.RemoveAt(_scopes.Count - 1);
        }
    }

    object? Lookup(string name)
    {
        for (int i = _scopes.Count - 1; i >= 0; i--)
            if (_scopes[i].TryGetValue(name, out var v)) return v;
        return Undefined.Value;
    }

    object? Eval(Expr e) => e switch
    {
        Literal l => l.Value,
        NameExpr n => Lookup(n.Name),
        ListExpr l => l.Items.Select(Eval).ToList(),
        DictExpr d => d.Items.ToDictionary(p => Str(Eval(p.Key)), p => Eval(p.Value)),
        AttrExpr a => Member(Eval(a.Target), a.Name),
        IndexExpr i => Index(Eval(i.Target), Eval(i.Index)),
        SliceExpr s => Slice(Eval(s.Target), s.Start is null ? null : Eval(s.Start), s.Stop is null ? null : Eval(s.Stop)),
        CallExpr c => Call(c),
        FilterExpr f => Filter(Eval(f.Value), f.Name, f.Args.Select(Eval).ToList()),
        TestExpr t => Test(Eval(t.Value), t.Name) != t.Negate,
        UnaryExpr { Op: "not" } u => !Truthy(Eval(u.Operand)),
        UnaryExpr u => Arith("-", 0L, Eval(u.Operand)),
        BinaryExpr { Op: "and" } b => Truthy(Eval(b.Left)) ? Eval(b.Right) : Eval(b.Left),
        BinaryExpr { Op: "or" } b => Eval(b.Left) is var l && Truthy(l) ? l : Eval(b.Right),
        BinaryExpr b => Binary(b.Op, Eval(b.Left), Eval(b.Right)),
        ConditionalExpr c => Truthy(Eval(c.Condition)) ? Eval(c.Then) : c.Else is null ? Undefined.Value : Eval(c.Else),
        _ => throw new ChatTemplateException($"cannot evaluate {e.GetType().Name}"),
    };

    object? Call(CallExpr c)
    {
        var args = c.Args.Select(Eval).ToList();
        if (c.Function is NameExpr { Name: var fn } && Lookup(fn) is Undefined)
        {
            switch (fn)
            {
                case "raise_exception": throw new ChatTemplateException(Str(args.FirstOrDefault()));
                case "namespace":
                    var ns = new Namespace();
                    foreach (var (k, v) in c.Kwargs) ns[k] = Eval(v);
                    return ns;
                case "strftime_now": return StrftimeNow(Str(args.FirstOrDefault()));
                case "range":
                    long start = args.Count > 1 ? ToLong(args[0]) : 0, stop = ToLong(args[^1]);
                    return Enumerable.Range((int)start, (int)Math.Max(0, stop - start)).Select(i => (object?)(long)i).ToList();
                default: throw new ChatTemplateException($"unknown function '{fn}'");
            }
        }
        if (c.Function is AttrExpr { Target: var target, Name: var method })
        {
            var self = Eval(target);
            if (self is string s) return StringMethod(s, method, args);
            if (self is IDictionary<string, object?> dict)
                return method switch
                {
                    "get" => dict.TryGetValue(Str(args[0]), out var v) ? v : args.Count > 1 ? args[1] : null,
                    "items" => dict.Select(kv => (object?)new List<object?> { kv.Key, kv.Value }).ToList(),
                    "keys" => dict.Keys.Select(k => (object?)k).ToList(),
                    "values" => dict.Values.ToList(),
                    _ => throw new ChatTemplateException($"unknown dict method '{method}'"),
                };
        }
        throw new ChatTemplateException("call of something that is not a function");
    }

    static object? StringMethod(string s, string method, List<object?> args) => method switch
    {
        "strip" => args.Count > 0 ? s.Trim(Str(args[0]).ToCharArray()) : s.Trim(),
        "lstrip" => args.Count > 0 ? s.TrimStart(Str(args[0]).ToCharArray()) : s.TrimStart(),
        "rstrip" => args.Count > 0 ? s.TrimEnd(Str(args[0]).ToCharArray()) : s.TrimEnd(),
        "upper" => s.ToUpperInvariant(),
        "lower" => s.ToLowerInvariant(),
        "title" => CultureInfo.InvariantCulture.TextInfo.ToTitleCase(s),
        "startswith" => s.StartsWith(Str(args[0]), StringComparison.Ordinal),
        "endswith" => s.EndsWith(Str(args[0]), StringComparison.Ordinal),
        "split" => (args.Count > 0 ? s.Split(Str(args[0])) : s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)).Select(x => (object?)x).ToList(),
        "replace" => s.Replace(Str(args[0]), Str(args[1]), StringComparison.Ordinal),
        _ => throw new ChatTemplateException($"unknown string method '{method}'"),
    };

    static string StrftimeNow(string format)
    {
        var now = DateTime.Now;
        var sb = new StringBuilder();
        for (int i = 0; i < format.Length; i++)
        {
            if (format[i] != '%' || i + 1 >= format.Length)
            {
                sb.Append(format[i]);
                continue;
            }
            sb.Append(format[++i] switch
            {
                'd' => now.ToString("dd", CultureInfo.InvariantCulture),
                'm' => now.ToString("MM", CultureInfo.InvariantCulture),
                'Y' => now.ToString("yyyy", CultureInfo.InvariantCulture),
                'y' => now.ToString("yy", CultureInfo.InvariantCulture),
                'b' => now.ToString("MMM", CultureInfo.InvariantCulture),
                'B' => now.ToString("MMMM", CultureInfo.InvariantCulture),
                'H' => now.ToString("HH", CultureInfo.InvariantCulture),
                'M' => now.ToString("mm", CultureInfo.InvariantCulture),
                'S' => now.ToString("ss", CultureInfo.InvariantCulture),
                '%' => "%",
                char c => "%" + c,
            });
        }
        return sb.ToString();
    }

    static object? Member(object? target, string name) => target switch
    {
        IDictionary<string, object?> d => d.TryGetValue(name, out var v) ? v : Undefined.Value,
        _ => Undefined.Value,
    };

    static object? Index(object? target, object? index) => target switch
    {
        IDictionary<string, object?> d => d.TryGetValue(Str(index), out var v) ? v : Undefined.Value,
        IList<object?> l when index is long i => (i < 0 ? i + l.Count : i) is var j && j >= 0 && j < l.Count ? l[(int)j] : Undefined.Value,
        string s when index is long i => (i < 0 ? i + s.Length : i) is var j && j >= 0 && j < s.Length ? s[(int)j].ToString() : Undefined.Value,
        _ => Undefined.Value,
    };

    static object? Slice(object? target, object? start, object? stop)
    {
        int count = target switch { string s => s.Length, IList<object?> l => l.Count, _ => 0 };
        int Clamp(object? v, int dflt) => v is long i ? (int)Math.Clamp(i < 0 ? i + count : i, 0, count) : dflt;
        int a = Clamp(start, 0), b = Math.Max(a, Clamp(stop, count));
        return target switch
        {
            string s => s[a..b],
            IList<object?> l => l.Skip(a).Take(b - a).ToList(),
            _ => Undefined.Value,
        };
    }

    static object? Filter(object? v, string name, List<object?> args) => name switch
    {
        "trim" => Str(v).Trim(),
        "upper" => Str(v).ToUpperInvariant(),
        "lower" => Str(v).ToLowerInvariant(),
        "length" or "count" => (long)(v switch { string s => s.Length, ICollection c => c.Count, _ => Items(v).Count() }),
        "default" or "d" => v is Undefined || (args.Count > 1 && Truthy(args[1]) && !Truthy(v)) ? args.FirstOrDefault() ?? "" : v,
        "first" => Items(v).FirstOrDefault() ?? Undefined.Value,
        "last" => Items(v).LastOrDefault() ?? Undefined.Value,
        "join" => string.Join(args.Count > 0 ? Str(args[0]) : "", Items(v).Select(Str)),
        "tojson" => ToJson(v, args.Count > 0 ? args[0] : null),
        "string" => Str(v),
        "int" => v is string s && long.TryParse(s, out var n) ? n : ToLong(v),
        "list" => Items(v).ToList(),
        "capitalize" => Str(v) is var c && c.Length > 0 ? char.ToUpperInvariant(c[0]) + c[1..].ToLowerInvariant() : "",
        "reverse" => v is string rs ? new string(rs.Reverse().ToArray()) : Items(v).Reverse().ToList(),
        _ => throw new ChatTemplateException($"unknown filter '{name}'"),
    };

    static bool Test(object? v, string name) => name switch
    {
        "defined" => v is not Undefined,
        "undefined" => v is Undefined,
        "none" => v is null,
        "string" => v is string,
        "number" or "integer" => v is long or double,
        "boolean" => v is bool,
        "mapping" => v is IDictionary<string, object?>,
        "iterable" or "sequence" => v is string or IList<object?> or IDictionary<string, object?>,
        "true" => v is true,
        "false" => v is false,
        _ => throw new ChatTemplateException($"unknown test '{name}'"),
    };

    static object? Binary(string op, object? l, object? r) => op switch
    {
        "==" => ValueEquals(l, r),
        "!=" => !ValueEquals(l, r),
        "<" or ">" or "<=" or ">=" => Compare(op, l, r),
        "in" => r switch
        {
            string s => s.Contains(Str(l), StringComparison.Ordinal),
            IDictionary<string, object?> d => d.ContainsKey(Str(l)),
            _ => Items(r).Any(x => ValueEquals(x, l)),
        },
        "~" => Str(l) + Str(r),
        "+" when l is string || r is string => Str(l) + Str(r),
        "+" when l is IList<object?> a && r is IList<object?> b => a.Concat(b).ToList(),
        _ => Arith(op, l, r),
    };

    static object Arith(string op, object? l, object? r)
    {
        if (l is long a && r is long b)
            return op switch
            {
                "+" => (object)(a + b), "-" => a - b, "*" => a * b, "//" => (long)Math.Floor((double)a / b), "%" => ((a % b) + b) % b, "/" => (double)a / b,
                _ => throw new ChatTemplateException($"unknown operator '{op}'"),
            };
        double x = ToDouble(l), y = ToDouble(r);
        return op switch
        {
            "+" => x + y, "-" => x - y, "*" => x * y, "/" => x / y, "//" => Math.Floor(x / y), "%" => x - y * Math.Floor(x / y),
            _ => throw new ChatTemplateException($"unknown operator '{op}'"),
        };
    }

    static bool Compare(string op, object? l, object? r)
    {
        int c = l is string a && r is string b ? string.CompareOrdinal(a, b) : ToDouble(l).CompareTo(ToDouble(r));
        return op switch { "<" => c < 0, ">" => c > 0, "<=" => c <= 0, _ => c >= 0 };
    }

    static bool ValueEquals(object? l, object? r)
    {
        if (l is long or double && r is long or double) return ToDouble(l) == ToDouble(r);
        if (l is Undefined || r is Undefined) return l is Undefined && r is Undefined;
        return Equals(l, r);
    }

    static double ToDouble(object? v) => v switch
    {
        long l => l, double d => d, bool b => b ? 1 : 0,
        _ => throw new ChatTemplateException($"'{Str(v)}' is not a number"),
    };

    static long ToLong(object? v) => v switch { long l => l, double d => (long)d, bool b => b ? 1 : 0, _ => 0 };

    public static bool Truthy(object? v) => v switch
    {
        null or Undefined => false,
        bool b => b,
        string s => s.Length > 0,
        long l => l != 0,
        double d => d != 0,
        ICollection c => c.Count > 0,
        _ => true,
    };

    static IEnumerable<object?> Items(object? v) => v switch
    {
        null or Undefined => [],
        string s => s.Select(c => (object?)c.ToString()),
        IDictionary<string, object?> d => d.Keys,
        IEnumerable<object?> e => e,
        _ => throw new ChatTemplateException($"'{Str(v)}' is not iterable"),
    };

    public static string Str(object? v) => v switch
    {
        null => "None",
        Undefined => "",
        string s => s,
        bool b => b ? "True" : "False",
        long l => l.ToString(CultureInfo.InvariantCulture),
        double d => d.ToString("R", CultureInfo.InvariantCulture),
        IDictionary<string, object?> or IList<object?> => ToJson(v, null),
        _ => v.ToString() ?? "",
    };

    static string ToJson(object? v, object? indent)
    {
        var options = new JsonSerializerOptions { WriteIndented = indent is long, Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };
        return JsonSerializer.Serialize(Plain(v), options);
    }

    static object? Plain(object? v) => v switch
    {
        Undefined => null,
        IDictionary<string, object?> d => d.ToDictionary(kv => kv.Key, kv => Plain(kv.Value)),
        IList<object?> l => l.Select(Plain).ToList(),
        _ => v,
    };
}
