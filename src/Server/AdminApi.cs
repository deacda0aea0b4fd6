using System.Globalization;
using System.Text;
using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.Routing;

namespace LoraEngine.Server;

/// <summary>Runtime adapter loading (vLLM's routes and texts) and Prometheus metrics.</summary>
internal static class AdminApi
{
    public static IResult LoadLoraAdapter(LoadLoraRequest request, ServerState state)
    {
        lock (state.Adapters.Updates) return Load(request, state);
    }

    public static IResult UnloadLoraAdapter(UnloadLoraRequest request, ServerState state)
    {
        lock (state.Adapters.Updates) return Unload(request, state);
    }

    static IResult Load(LoadLoraRequest request, ServerState state)
    {
        if (string.IsNullOrEmpty(request.LoraName) || string.IsNullOrEmpty(request.LoraPath))
            return ApiErrors.BadRequest("Both 'lora_name' and 'lora_path' must be provided.", string.IsNullOrEmpty(request.LoraName) ? "lora_name" : "lora_path");
        // The model field resolves the base model's name first: an adapter under it could never be used.
        if (request.LoraName == state.ModelId)
            return ApiErrors.BadRequest($"lora_name '{request.LoraName}' is the base model's name; choose another.", "lora_name");
        if (state.Adapters.Contains(request.LoraName) && request.LoadInplace != true)
            return ApiErrors.BadRequest($"The lora adapter '{request.LoraName}' has already been loaded. If you want to load the adapter in place, set 'load_inplace' to True.");
        if (state.Adapters.CheckConfined(request.LoraPath) is { } refusal) return ApiErrors.BadRequest(refusal, "lora_path");
        var confined = state.Adapters.CreateConfined(request.LoraName, request.LoraPath);
        var lora = state.Adapters.Find(request.LoraName) is { } existing ? confined with { LoraIntId = existing.LoraIntId } : confined;
        try
        {
            // Read and validated now, so a bad adapter is refused here. In place: read again even though loaded; requests
            // running with it switch to the new weights from their next step, and every later request gets them.
            state.Engine.Engine.AddLora(lora with { LoadInplace = request.LoadInplace == true });
        }
        catch (Exception e) when (e is Lora.LoraException or ArgumentException)
        {
            return ApiErrors.FromException(e);
        }
        state.Adapters.Add(lora, null);
        return Results.Text($"Success: LoRA adapter '{request.LoraName}' added successfully.");
    }

    static IResult Unload(UnloadLoraRequest request, ServerState state)
    {
        if (string.IsNullOrEmpty(request.LoraName)) return ApiErrors.BadRequest("'lora_name' needs to be provided to unload a LoRA adapter.");
        if (!state.Adapters.Remove(request.LoraName, out var lora)) return ApiErrors.NotFound($"The lora adapter '{request.LoraName}' cannot be found.");
        state.Engine.Engine.RemoveLora(lora!.LoraIntId);
        return Results.Text($"Success: LoRA adapter '{request.LoraName}' removed successfully.");
    }

    /// <summary>Prometheus text exposition of the engine's and the server's counters and histograms.</summary>
    public static IResult Metrics(ServerState state)
    {
        var m = state.Engine.Engine.Metrics;
        var s = m.Last;
        var sb = new StringBuilder();
        void Line(string name, string type, string help, double value, string labels = "")
        {
            sb.Append("# HELP ").Append(name).Append(' ').Append(help).Append('\n');
            sb.Append("# TYPE ").Append(name).Append(' ').Append(type).Append('\n');
            sb.Append(name).Append(labels).Append(' ').Append(value.ToString(CultureInfo.InvariantCulture)).Append('\n');
        }
        string model = $"{{model_name=\"{state.ModelId}\"}}";
        Line("loraengine_request_success_total", "counter", "Requests finished successfully.", state.RequestsSucceeded, model);
        Line("loraengine_request_aborted_total", "counter", "Requests aborted by their client.", state.RequestsAborted, model);
        Line("loraengine_request_failure_total", "counter", "Requests that ended in a server error (a 5xx or an error event).", state.RequestsFailed, model);
        Line("loraengine_engine_requests_failed_total", "counter", "Requests the engine failed (bad output for one request, or a device failure).", m.RequestsFailed, model);
        Line("loraengine_requests_started_total", "counter", "Requests started.", state.RequestsStarted, model);
        Line("loraengine_prompt_tokens_total", "counter", "Prompt tokens computed.", m.PromptTokens, model);
        Line("loraengine_generation_tokens_total", "counter", "Tokens generated.", m.GenerationTokens, model);
        Line("loraengine_prefix_cache_queries_total", "counter", "Prompt tokens looked up in the prefix cache.", m.PrefixCacheQueries, model);
        Line("loraengine_prefix_cache_hits_total", "counter", "Prompt tokens found in the prefix cache.", m.PrefixCacheHits, model);
        Line("loraengine_num_requests_running", "gauge", "Requests running.", s?.NumRunning ?? 0, model);
        Line("loraengine_num_requests_waiting", "gauge", "Requests waiting.", s?.NumWaiting ?? 0, model);
        Line("loraengine_kv_cache_usage_perc", "gauge", "Fraction of KV blocks in use.", s?.KvCacheUsage ?? 0, model);
        Line("loraengine_kv_blocks_used", "gauge", "KV blocks in use.", state.Engine.Engine.NumUsedKvBlocks, model);
        Line("loraengine_lora_adapters_loaded", "gauge", "Adapters loaded in the CPU cache.", state.Engine.Engine.ListLoras().Count, model);
        Line("loraengine_lora_adapters_active", "gauge", "Adapters used by running requests.", s?.RunningLoraAdapters.Count ?? 0, model);
        sb.Append("# HELP loraengine_lora_requests_info Running and waiting adapters.\n# TYPE loraengine_lora_requests_info gauge\n");
        sb.Append($"loraengine_lora_requests_info{{running_lora_adapters=\"{string.Join(",", s?.RunningLoraAdapters ?? [])}\",waiting_lora_adapters=\"{string.Join(",", s?.WaitingLoraAdapters ?? [])}\",max_lora=\"{state.Options.Engine.MaxLoras}\"}} 1\n");
        Histogram(sb, "loraengine_time_to_first_token_seconds", "Time to first token.", m.TimeToFirstToken, model);
        Histogram(sb, "loraengine_inter_token_latency_seconds", "Time between output tokens.", m.InterTokenLatency, model);
        Histogram(sb, "loraengine_e2e_request_latency_seconds", "End-to-end request latency.", m.RequestLatency, model);
        return Results.Text(sb.ToString(), "text/plain; version=0.0.4");
    }

    static void Histogram(StringBuilder sb, string name, string help, LoraEngine.Metrics.LatencyHistogram h, string labels)
    {
        string inner = labels.Trim('{', '}');
        sb.Append($"# HELP {name} {help}\n# TYPE {name} histogram\n");
        foreach (var (le, count) in h.Snapshot())
            sb.Append($"{name}_bucket{{{inner},le=\"{le.ToString(CultureInfo.InvariantCulture)}\"}} {count}\n");
        sb.Append($"{name}_bucket{{{inner},le=\"+Inf\"}} {h.Count}\n{name}_sum{labels} {h.Sum.ToString(CultureInfo.InvariantCulture)}\n{name}_count{labels} {h.Count}\n");
    }
}
