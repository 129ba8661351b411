using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Models.Embeddings;

/// <summary>
/// Sinusoidal timestep features (diffusers <c>Timesteps</c>): half sines, half cosines over geometric
/// frequencies <c>exp(-ln(10000)·i / (half − downscale_freq_shift))</c>; cosines first when
/// <c>flip_sin_to_cos</c>. No parameters. Computed in fp32; the caller casts.
/// </summary>
public sealed class Timesteps : nn.Module<Tensor, Tensor>
{
    readonly int num_channels;
    readonly bool flip_sin_to_cos;
    readonly double downscale_freq_shift;
    const double MaxPeriod = 10000;

    public Timesteps(int numChannels, bool flipSinToCos, double downscaleFreqShift) : base(nameof(Timesteps))
    {
        num_channels = numChannels;
        flip_sin_to_cos = flipSinToCos;
        downscale_freq_shift = downscaleFreqShift;
        RegisterComponents();
    }

    /// <param name="timesteps">[B] (int or float).</param>
    /// <returns>[B, num_channels] float32.</returns>
    public override Tensor forward(Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        if (timesteps.dim() != 1) throw new ArgumentException($"timesteps must be 1-D [B], got [{string.Join(", ", timesteps.shape)}]");
        var half = num_channels / 2;
        var exponent = arange(0, half, dtype: ScalarType.Float32, device: timesteps.device) * (-Math.Log(MaxPeriod) / (half - downscale_freq_shift));
        var freqs = exponent.exp();
        var args = timesteps.to_type(ScalarType.Float32).unsqueeze(1) * freqs.unsqueeze(0);
        var emb = flip_sin_to_cos ? cat([args.cos(), args.sin()], 1) : cat([args.sin(), args.cos()], 1);
        if (num_channels % 2 == 1) emb = nn.functional.pad(emb, [0, 1, 0, 0]);
        return emb.MoveToOuterDisposeScope();
    }
}
