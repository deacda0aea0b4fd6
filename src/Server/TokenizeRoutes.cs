using LoraEngine.Chat;
using Microsoft.AspNetCore.Http;

namespace LoraEngine.Server;

/// <summary>
/// vLLM's POST /tokenize and /detokenize. Tokens are what the engine would be given: a prompt gets BOS unless it
/// starts with it (add_special_tokens, default true); messages go through the chat template (add_special_tokens
/// default false, since the template writes BOS).
/// </summary>
internal static class TokenizeRoutes
{
    public static async Task<IResult> Tokenize(HttpContext http, ServerState state)
    {
        RequestIds.EchoHeader(http);
        var (request, error) = await RequestBody.ReadAsync<TokenizeRequest>(http);
        if (error != null) return error;
        var r = request!;
        if (!state.TryResolve(r.Model, out _)) return ApiErrors.ModelNotFound(r.Model);
        var engine = state.Engine.Engine;
        try
        {
            EnginePrompt prompt;
            if (r.Prompt != null && r.Messages != null) throw new BadRequestException("give either prompt or messages, not both", "messages");
            if (r.Messages != null)
            {
                if (state.ChatTemplate is null) throw new BadRequestException("the model has no chat template; tokenize a prompt instead", "messages");
                string text = ChatInputs.Render(state.ChatTemplate, engine.Tokenizer, r, ChatInputs.Turns(r.Messages));
                prompt = PromptInputs.FromText(text, engine, r.AddSpecialTokens ?? false);
            }
            else
            {
                if (r.Prompt is null) throw new BadRequestException("prompt or messages is required", "prompt");
                if (r.AddGenerationPrompt != null || r.ContinueFinalMessage != null || r.ChatTemplateKwargs != null
                    || r.Documents.ValueKind != System.Text.Json.JsonValueKind.Undefined || r.ReasoningEffort != null)
                    throw new BadRequestException("add_generation_prompt, continue_final_message, chat_template_kwargs, documents and reasoning_effort apply to messages only", "messages");
                prompt = PromptInputs.FromText(r.Prompt, engine, r.AddSpecialTokens ?? true);
            }
            var tokens = prompt.TokenIds;
            return Results.Json(new TokenizeResponse(tokens.Count, engine.Config.MaxModelLen, tokens)
            {
                TokenStrs = r.ReturnTokenStrs == true ? tokens.Select(engine.Tokenizer.IdToToken).ToList() : null,
            }, Wire.Options);
        }
        catch (BadRequestException e)
        {
            return ApiErrors.BadRequest(e.Message, e.Param);
        }
        catch (Exception e) when (e is ArgumentException or ChatTemplateException)
        {
            return ApiErrors.FromException(e);
        }
    }

    public static async Task<IResult> Detokenize(HttpContext http, ServerState state)
    {
        RequestIds.EchoHeader(http);
        var (request, error) = await RequestBody.ReadAsync<DetokenizeRequest>(http);
        if (error != null) return error;
        var r = request!;
        if (!state.TryResolve(r.Model, out _)) return ApiErrors.ModelNotFound(r.Model);
        if (r.Tokens is null) return ApiErrors.BadRequest("tokens is required", "tokens");
        int vocab = state.Engine.Engine.ModelConfig.VocabSize;
        foreach (int t in r.Tokens)
            if (t < 0 || t >= vocab) return ApiErrors.BadRequest($"token id {t} is outside the vocabulary [0, {vocab})", "tokens");
        return Results.Json(new DetokenizeResponse(state.Engine.Engine.Tokenizer.Decode(r.Tokens)), Wire.Options);
    }
}
