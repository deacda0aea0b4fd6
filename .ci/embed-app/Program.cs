// An application of its own that mounts LoraEngine: configuration in, one completion out, exit code says whether it worked.
// Usage: EmbedApp <model folder>
using System.Net.Http.Json;
using System.Text.Json;
using LoraEngine.Server;

var builder = WebApplication.CreateSlimBuilder();
builder.WebHost.UseUrls("http://127.0.0.1:0");
builder.Logging.SetMinimumLevel(LogLevel.Warning);
builder.Configuration["LoraEngine:Engine:Model"] = args[0];
builder.Configuration["LoraEngine:Engine:Device"] = "cpu";
builder.Configuration["LoraEngine:Engine:NumGpuBlocksOverride"] = "64";
builder.Services.AddLoraEngine(builder.Configuration.GetSection("LoraEngine"));

await using var app = builder.Build();
app.MapOpenAiEndpoints();
app.MapLoraAdmin();
await app.StartAsync();

using var http = new HttpClient { BaseAddress = new Uri(app.Urls.First()) };
var response = await http.PostAsJsonAsync("/v1/completions", new { prompt = "To delete a line, type", max_tokens = 6, temperature = 0 });
string body = await response.Content.ReadAsStringAsync();
string health = await http.GetStringAsync("/health");
await app.StopAsync();
Console.WriteLine($"{(int)response.StatusCode} {body}");
Console.WriteLine($"health: {health}");
using var json = JsonDocument.Parse(body);
bool ok = response.IsSuccessStatusCode && health == "Healthy"
    && json.RootElement.GetProperty("usage").GetProperty("completion_tokens").GetInt32() == 6;
return ok ? 0 : 1;
