using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Hosting;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Hosting;
using Microsoft.Extensions.Logging;

namespace LoraEngine.Server;

/// <summary>
/// <c>loraengine serve</c>'s host: Kestrel on <see cref="ServerOptions.Host"/>:<see cref="ServerOptions.Port"/> over the
/// same building blocks an application uses (<see cref="LoraEngineServiceCollectionExtensions.AddLoraEngine(IServiceCollection, ServerOptions)"/>,
/// <see cref="LoraEngineEndpointRouteBuilderExtensions.MapOpenAiEndpoints"/>, <see cref="LoraEngineEndpointRouteBuilderExtensions.MapLoraAdmin"/>),
/// plus what only a whole server decides: the body limit at the socket, the shutdown timeout and JSON bodies for
/// statuses no route answered (unknown routes, wrong methods).
/// </summary>
public static class ServerHost
{
    /// <summary>
    /// The host as a URL writes it. Kestrel listens on every interface for a host it cannot parse as an IP address or
    /// localhost, so a typo (127.0.0.l) or a name would expose the server: refused instead (0.0.0.0 or :: mean all).
    /// </summary>
    static string ListenHost(string host)
    {
        if (host == "localhost") return host;
        if (!System.Net.IPAddress.TryParse(host, out var address))
            throw new ArgumentException($"--host '{host}' is not an IP address or localhost (use 0.0.0.0 or :: to listen on every interface)", nameof(ServerOptions.Host));
        return address.AddressFamily == System.Net.Sockets.AddressFamily.InterNetworkV6 ? $"[{address}]" : address.ToString();
    }

    /// <summary>Builds the server; the engine and the static adapters are loaded here, so a bad one throws from Build.</summary>
    public static WebApplication Build(ServerOptions options, ILoggerFactory? loggerFactory = null)
    {
        ArgumentNullException.ThrowIfNull(options);
        string host = ListenHost(options.Host); // the options' own checks: AddLoraEngine's, below, before anything starts
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls($"http://{host}:{options.Port}");
        builder.WebHost.ConfigureKestrel(k => k.Limits.MaxRequestBodySize = options.MaxRequestBodyBytes);
        // Kestrel waits this long for requests in flight when it stops: the drain, then time to tell the rest.
        builder.Services.Configure<HostOptions>(h => h.ShutdownTimeout = options.DrainTimeout + TimeSpan.FromSeconds(10));
        builder.Logging.ClearProviders();
        if (loggerFactory != null) builder.Services.AddSingleton(loggerFactory);
        builder.Services.AddLoraEngine(options with { Engine = options.Engine with { LoggerFactory = loggerFactory ?? options.Engine.LoggerFactory } });

        var app = builder.Build();
        try
        {
            app.Services.GetRequiredService<ServerState>();
        }
        catch
        {
            ((IDisposable)app).Dispose();
            throw;
        }
        app.UseJsonStatusPages();
        app.MapOpenAiEndpoints();
        app.MapLoraAdmin();
        return app;
    }
}
