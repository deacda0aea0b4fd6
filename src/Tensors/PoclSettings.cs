using System.Runtime.InteropServices;

namespace LoraEngine.Tensors;

/// <summary>
/// Settings for pocl, the portable OpenCL runtime (its CPU device is the OpenCL device most machines without a GPU
/// have), made before an OpenCL context is created.
/// </summary>
internal static partial class PoclSettings
{
    /// <summary>
    /// Asks pocl for its continuation-based work-group method unless the user chose one (POCL_WORK_GROUP_METHOD): with
    /// pocl 5.0's default ("loopvec") the LoRA shrink, whose warp exchanges put group barriers inside the loops ILGPU
    /// writes as gotos, corrupted the heap, and the sampling kernels' radix selects picked wrong tokens; with "cbs" the
    /// Tensors tests pass. pocl reads the variable through the C runtime when it first compiles, so it is set there
    /// (.NET's own environment block is not the C runtime's on Linux). Other OpenCL runtimes ignore it.
    /// </summary>
    public static void PreferContinuationBasedWorkGroups()
    {
        if (!OperatingSystem.IsLinux()) return;
        if (Environment.GetEnvironmentVariable(WorkGroupMethod) is { Length: > 0 }) return;
        try
        {
            SetEnvironment(WorkGroupMethod, "cbs", overwrite: 0);
        }
        catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException)
        {
            // No C runtime to ask: pocl keeps its default.
        }
    }

    const string WorkGroupMethod = "POCL_WORK_GROUP_METHOD";

    [LibraryImport("libc", EntryPoint = "setenv", StringMarshalling = StringMarshalling.Utf8)]
    private static partial int SetEnvironment(string name, string value, int overwrite);
}
