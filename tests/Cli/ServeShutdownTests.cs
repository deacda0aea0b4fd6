using System.Diagnostics;
using System.Net;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text.Json;
using LoraEngine.TestSupport;
using Xunit;

namespace LoraEngine.Cli.Tests;

/// <summary>`loraengine serve` as a process: SIGTERM drains the requests in flight, aborts what is left with an error event, exits 0.</summary>
public class ServeShutdownTests
{
    static CancellationToken Ct => TestContext.Current.CancellationToken;

    static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    [Fact]
    public async Task Sigterm_drains_then_aborts_with_an_error_event_and_exits_0()
    {
        if (OperatingSystem.IsWindows()) Assert.Skip("SIGTERM is a POSIX signal");
        int port = FreePort();
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in new[] { Path.Combine(AppContext.BaseDirectory, "loraengine.dll"), "serve", "--model", Fixtures.Model("vim-tiny-bf16"),
                     "--device", "cpu", "--port", port.ToString(), "--drain-timeout", "1", "--max-num-seqs", "8" })
            start.ArgumentList.Add(a);
        using var server = Process.Start(start)!;
        var stdout = server.StandardOutput.ReadToEndAsync(Ct);
        var stderr = server.StandardError.ReadToEndAsync(Ct);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{port}") };
            for (int i = 0; i < 600; i++)
            {
                try
                {
                    if ((await http.GetAsync("/health", Ct)).IsSuccessStatusCode) break;
                }
                catch (HttpRequestException)
                {
                }
                if (server.HasExited) Assert.Fail($"the server exited: {await stderr}");
                await Task.Delay(100, Ct);
            }

            var request = new HttpRequestMessage(HttpMethod.Post, "/v1/completions")
            {
                Content = JsonContent.Create(new { prompt = "Vim is", max_tokens = 480, ignore_eos = true, stream = true }),
            };
            using var response = await http.SendAsync(request, HttpCompletionOption.ResponseHeadersRead, Ct);
            using var reader = new StreamReader(await response.Content.ReadAsStreamAsync(Ct));
            var events = new List<string> { (await reader.ReadLineAsync(Ct))! };
            Process.Start("kill", ["-TERM", server.Id.ToString()])!.WaitForExit();

            while (await reader.ReadLineAsync(Ct) is { } line)
                if (line.StartsWith("data: ", StringComparison.Ordinal)) events.Add(line[6..]);
            Assert.Equal("[DONE]", events[^1]);
            var last = JsonDocument.Parse(events[^2]).RootElement;
            if (last.TryGetProperty("error", out var error)) Assert.Contains("shutting down", error.GetProperty("message").GetString());
            else Assert.Equal("length", last.GetProperty("choices")[0].GetProperty("finish_reason").GetString()); // it finished within the drain time

            await server.WaitForExitAsync(Ct).WaitAsync(TimeSpan.FromSeconds(60), Ct);
            Assert.True(server.ExitCode == 0, $"exit {server.ExitCode}: {await stderr}");
            Assert.DoesNotContain("   at ", await stdout + await stderr);
        }
        finally
        {
            if (!server.HasExited) server.Kill(entireProcessTree: true);
        }
    }
}
