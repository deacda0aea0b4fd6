using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;
using Microsoft.AspNetCore.WebUtilities;

namespace LoraEngine.Server;

/// <summary>
/// A status that came without a body (an unknown route, a wrong method) gets an OpenAI-style JSON body too. For a whole
/// server (<see cref="ServerHost"/>); an application embedding the routes keeps its own answers for its own routes.
/// The routes' own errors come from <see cref="EndpointGuard"/>.
/// </summary>
internal static class ErrorHandling
{
    public static WebApplication UseJsonStatusPages(this WebApplication app)
    {
        app.UseStatusCodePages(context =>
        {
            int status = context.HttpContext.Response.StatusCode;
            string message = ReasonPhrases.GetReasonPhrase(status) is { Length: > 0 } phrase ? phrase : $"HTTP {status}";
            if (status == 404) message = $"No route {context.HttpContext.Request.Method} {context.HttpContext.Request.Path}.";
            return context.HttpContext.Response.WriteAsJsonAsync(ApiErrors.Body(status, ApiErrors.TypeOf(status), message), Wire.Options);
        });
        return app;
    }
}
