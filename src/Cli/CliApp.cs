using System.CommandLine;

namespace LoraEngine.Cli;

/// <summary>
/// The loraengine tool: its commands, and how it fails. A user error (a missing model, a bad adapter, a parameter out
/// of range, a port in use, a device that is not there) is one line on stderr and exit code 1; a command line that
/// does not parse is one line per problem and exit code 2; stack traces only with --verbose.
/// </summary>
internal static class CliApp
{
    /// <summary>Prints the whole exception (type, stack trace, inner exceptions) instead of one line.</summary>
    public static readonly Option<bool> Verbose = new("--verbose") { Description = "Print the full exception (stack trace) of an error", Recursive = true };

    public static RootCommand Create() => new("LoraEngine: multi-LoRA Llama serving in managed C#")
    {
        GenerateCommand.Create(),
        ServeCommand.Create(),
        InfoCommand.Create(),
        BenchCommand.Create(),
        Verbose,
    };

    public static async Task<int> RunAsync(string[] args, TextWriter error)
    {
        var parse = Create().Parse(args);
        if (parse.Errors.Count > 0)
        {
            foreach (var problem in parse.Errors) error.WriteLine($"error: {problem.Message} (see --help)");
            return 2;
        }
        try
        {
            // SIGTERM and Ctrl+C are left to the commands: serve's host drains its requests before it exits.
            return await parse.InvokeAsync(new InvocationConfiguration { EnableDefaultExceptionHandler = false, ProcessTerminationTimeout = null, Error = error });
        }
        catch (Exception e)
        {
            var flags = parse.CommandResult.Command.Options.Select(o => o.Name).ToHashSet();
            error.WriteLine(parse.GetValue(Verbose) ? $"error: {e}" : $"error: {OneLine(e, flags)}");
            return 1;
        }
    }

    /// <summary>
    /// The exception's message on one line, without .NET's "(Parameter 'X')" and "Actual value was …" additions; a message
    /// that begins with an options property (MaxLoras) names the command's option instead (--max-loras), as typed.
    /// </summary>
    public static string OneLine(Exception e, IReadOnlySet<string>? flags = null)
    {
        string message = e.Message;
        if (e is ArgumentException { ParamName: { } p })
        {
            message = message.Replace($" (Parameter '{p}')", "");
            if (flags != null && Flag(p) is { } flag && flags.Contains(flag) && message.StartsWith(p, StringComparison.Ordinal))
                message = flag + message[p.Length..];
        }
        var lines = message.Split(['\r', '\n'], StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (e is ArgumentOutOfRangeException { ActualValue: not null }) lines = [.. lines.Where(l => !l.StartsWith("Actual value was ", StringComparison.Ordinal))];
        return string.Join(' ', lines);
    }

    /// <summary>--max-loras for MaxLoras: the options are the properties' names in kebab case; null for a name that is not PascalCase.</summary>
    static string? Flag(string property)
    {
        if (property.Length == 0 || !char.IsUpper(property[0]) || !property.All(char.IsAsciiLetterOrDigit)) return null;
        var flag = new System.Text.StringBuilder("--");
        for (int i = 0; i < property.Length; i++)
        {
            if (char.IsUpper(property[i]) && i > 0) flag.Append('-');
            flag.Append(char.ToLowerInvariant(property[i]));
        }
        return flag.ToString();
    }
}
