using System.Runtime.InteropServices;
using System.Runtime.Intrinsics.X86;

namespace DreamBooth.Runtime;

/// <summary>
/// Which vectorised CPU kernels libtorch dispatches to on this machine: the widest its CPU supports (AVX-512 needs
/// F/BW/VL/DQ, AVX2 needs FMA), unless <c>ATEN_CPU_CAPABILITY</c> lowers it. Wider vectors add up sums in another
/// order, so CPU results agree bitwise only between machines that use the same kernels (and thread count):
/// the demo's figures differ between an AVX-512 and an AVX2 machine (docs/demo.md).
/// </summary>
public static class CpuKernels
{
    public const string EnvVar = "ATEN_CPU_CAPABILITY";

    /// <summary>"avx512", "avx2", "default" (x86 without AVX2) or the architecture's name ("arm64", ...).</summary>
    public static string Name
    {
        get
        {
            if (RuntimeInformation.ProcessArchitecture is not (Architecture.X64 or Architecture.X86))
                return RuntimeInformation.ProcessArchitecture.ToString().ToLowerInvariant();
            string hardware = Avx512F.IsSupported && Avx512BW.IsSupported && Avx512DQ.IsSupported && Avx512F.VL.IsSupported ? "avx512"
                : Avx2.IsSupported && Fma.IsSupported ? "avx2" : "default";
            string? env = Environment.GetEnvironmentVariable(EnvVar)?.Trim().ToLowerInvariant();
            // the variable can only lower the capability
            string[] order = ["default", "avx2", "avx512"];
            return env is not null && Array.IndexOf(order, env) is int i and >= 0 && i < Array.IndexOf(order, hardware) ? env : hardware;
        }
    }
}
