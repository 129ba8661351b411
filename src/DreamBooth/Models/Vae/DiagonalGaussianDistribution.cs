using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>
/// diffusers <c>DiagonalGaussianDistribution</c>: the VAE posterior. Parameters [B, 2·C, h, w] split into mean and
/// log-variance (clamped to [−30, 20]). Owns its tensors: dispose it (or let its dispose scope do so).
/// </summary>
public sealed class DiagonalGaussianDistribution : IDisposable
{
    public Tensor Mean { get; }
    public Tensor LogVar { get; }
    public Tensor Std { get; }
    public Tensor Var { get; }

    public DiagonalGaussianDistribution(Tensor parameters)
    {
        using var scope = NewDisposeScope();
        var chunks = parameters.chunk(2, 1);
        Mean = chunks[0];
        LogVar = chunks[1].clamp(-30.0, 20.0);
        Std = (LogVar * 0.5).exp();
        Var = LogVar.exp();
        scope.MoveToOuter(Mean, LogVar, Std, Var);
    }

    /// <summary>mean + std · ε, ε ~ N(0, I) from <paramref name="generator"/> (or the global generator).</summary>
    public Tensor Sample(Generator? generator = null)
    {
        using var scope = NewDisposeScope();
        var eps = randn(Mean.shape, dtype: Mean.dtype, device: Mean.device, generator: generator);
        return (Mean + Std * eps).MoveToOuterDisposeScope();
    }

    /// <summary>The mean (the most likely latent).</summary>
    public Tensor Mode() => Mean.alias();

    public void Dispose()
    {
        Mean.Dispose();
        LogVar.Dispose();
        Std.Dispose();
        Var.Dispose();
    }
}
