using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>GET /v1/models and /v1/models/{id}: the base model and every adapter, each with its parent and root.</summary>
internal static class ModelsRoute
{
    public static IResult List(ServerState state) => Results.Json(new ModelList("list", Cards(state).ToList()), Wire.Options);

    public static IResult Get(string id, ServerState state) =>
        Cards(state).FirstOrDefault(c => c.Id == id) is { } card ? Results.Json(card, Wire.Options) : ApiErrors.ModelNotFound(id);

    static IEnumerable<ModelCard> Cards(ServerState state)
    {
        long now = DateTimeOffset.UtcNow.ToUnixTimeSeconds();
        yield return new ModelCard(state.ModelId, "model", now, "loraengine", state.Options.Engine.Model, null, state.Engine.Engine.Config.MaxModelLen);
        foreach (var (lora, parent) in state.Adapters.All)
            yield return new ModelCard(lora.LoraName, "model", now, "loraengine", lora.LoraPath, parent ?? state.ModelId, null);
    }
}
