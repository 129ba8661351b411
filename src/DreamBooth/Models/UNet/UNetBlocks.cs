using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>
/// What <see cref="UNet2DConditionModel"/> needs from a down block (<see cref="CrossAttnDownBlock2D"/>,
/// <see cref="DownBlock2D"/>): the new hidden states and the skip connections it produced, in order.
/// </summary>
public abstract class UNetDownBlock : nn.Module
{
    protected UNetDownBlock(string name) : base(name) { }

    /// <summary>Number of skip tensors <see cref="Forward"/> returns (resnets + the downsampler if any).</summary>
    public abstract int SkipCount { get; }

    /// <param name="hidden_states">[B, C, H, W].</param>
    /// <param name="temb">[B, temb].</param>
    /// <param name="encoder_hidden_states">[B, L, cross_dim]; ignored by blocks without attention.</param>
    /// <returns>[new hidden states, skip 1, …, skip n]; the new hidden states are the same tensor as skip n.</returns>
    public abstract Tensor[] Forward(Tensor hidden_states, Tensor temb, Tensor encoder_hidden_states);
}

/// <summary>What <see cref="UNet2DConditionModel"/> needs from an up block (<see cref="CrossAttnUpBlock2D"/>, <see cref="UpBlock2D"/>).</summary>
public abstract class UNetUpBlock : nn.Module
{
    protected UNetUpBlock(string name) : base(name) { }

    /// <summary>Number of skip tensors this block consumes (one per resnet).</summary>
    public abstract int SkipCount { get; }

    /// <param name="hidden_states">[B, C, H, W].</param>
    /// <param name="res_hidden_states">skip tensors for this block, oldest first; the last is used first.</param>
    /// <param name="temb">[B, temb].</param>
    /// <param name="encoder_hidden_states">[B, L, cross_dim]; ignored by blocks without attention.</param>
    /// <param name="upsample_size">[H', W'] for the upsampler, or null for 2×.</param>
    public abstract Tensor Forward(Tensor hidden_states, IReadOnlyList<Tensor> res_hidden_states, Tensor temb,
        Tensor encoder_hidden_states, long[]? upsample_size);
}
