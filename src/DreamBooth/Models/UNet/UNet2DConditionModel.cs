using DreamBooth.Models.Embeddings;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>
/// diffusers <c>UNet2DConditionModel</c> for SD1.x/2.x configs: the noise-prediction network. Attribute names
/// (conv_in, time_proj, time_embedding, down_blocks, mid_block, up_blocks, conv_norm_out, conv_act, conv_out) are
/// diffusers', so the state-dict keys match diffusers' <c>unet/diffusion_pytorch_model.safetensors</c> by construction.
/// </summary>
public sealed class UNet2DConditionModel : nn.Module<Tensor, Tensor, Tensor, Tensor>
{
    readonly Conv2d conv_in;
    readonly Timesteps time_proj;
    readonly TimestepEmbedding time_embedding;
    readonly ModuleList<UNetDownBlock> down_blocks;
    readonly UNetMidBlock2DCrossAttn mid_block;
    readonly ModuleList<UNetUpBlock> up_blocks;
    readonly GroupNorm conv_norm_out;
    readonly SiLU conv_act;
    readonly Conv2d conv_out;

    public UNet2DConditionConfig Config { get; }

    /// <summary>
    /// Recompute each down/mid/up block's activations in the backward pass instead of keeping them
    /// (applies while training with grad enabled): activation memory of the blocks for one extra forward per step.
    /// </summary>
    public bool GradientCheckpointing { get; set; }

    public UNet2DConditionModel(UNet2DConditionConfig config) : base(nameof(UNet2DConditionModel))
    {
        config.Validate();
        Config = config;
        var boc = config.BlockOutChannels;
        int n = boc.Count;
        long timeEmbedDim = boc[0] * 4L;
        double eps = config.NormEps;
        int groups = config.NormNumGroups;

        conv_in = Layers.Conv2d(config.InChannels, boc[0], 3, stride: 1, padding: 1);
        time_proj = new Timesteps(boc[0], config.FlipSinToCos, config.FreqShift);
        time_embedding = new TimestepEmbedding(boc[0], timeEmbedDim);

        down_blocks = nn.ModuleList<UNetDownBlock>();
        int outputChannel = boc[0];
        for (int i = 0; i < n; i++)
        {
            int inputChannel = outputChannel;
            outputChannel = boc[i];
            bool isFinal = i == n - 1;
            down_blocks.Add(config.DownBlockTypes[i] == "CrossAttnDownBlock2D"
                ? new CrossAttnDownBlock2D(inputChannel, outputChannel, timeEmbedDim, config.LayersPerBlock, eps, groups,
                    config.HeadsFor(i), config.CrossAttentionDim, !isFinal, config.DownsamplePadding,
                    config.UseLinearProjection, config.UpcastAttention, config.Dropout)
                : new DownBlock2D(inputChannel, outputChannel, timeEmbedDim, config.LayersPerBlock, eps, groups, !isFinal,
                    config.DownsamplePadding, config.Dropout));
        }

        mid_block = new UNetMidBlock2DCrossAttn(boc[n - 1], timeEmbedDim, eps, groups, config.HeadsFor(n - 1),
            config.CrossAttentionDim, numLayers: 1, config.MidBlockScaleFactor, config.UseLinearProjection,
            config.UpcastAttention, config.Dropout);

        up_blocks = nn.ModuleList<UNetUpBlock>();
        var reversed = boc.Reverse().ToArray();
        outputChannel = reversed[0];
        for (int i = 0; i < n; i++)
        {
            bool isFinal = i == n - 1;
            int prevOutputChannel = outputChannel;
            outputChannel = reversed[i];
            int inputChannel = reversed[Math.Min(i + 1, n - 1)];
            int heads = config.HeadsFor(n - 1 - i);
            up_blocks.Add(config.UpBlockTypes[i] == "CrossAttnUpBlock2D"
                ? new CrossAttnUpBlock2D(inputChannel, prevOutputChannel, outputChannel, timeEmbedDim, config.LayersPerBlock + 1,
                    eps, groups, heads, config.CrossAttentionDim, !isFinal, config.UseLinearProjection, config.UpcastAttention, config.Dropout)
                : new UpBlock2D(inputChannel, prevOutputChannel, outputChannel, timeEmbedDim, config.LayersPerBlock + 1,
                    eps, groups, !isFinal, config.Dropout));
        }

        conv_norm_out = Layers.GroupNorm(groups, boc[0], eps);
        conv_act = nn.SiLU();
        conv_out = Layers.Conv2d(boc[0], config.OutChannels, 3, stride: 1, padding: 1);
        RegisterComponents();
    }

    /// <param name="sample">noisy latents [B, in_channels, h, w]; h and w need not be multiples of the downsampling.</param>
    /// <param name="timestep">[B] or a scalar, int64 or float.</param>
    /// <param name="encoderHiddenStates">text states [B, L, cross_attention_dim].</param>
    /// <returns>the prediction (noise or v) [B, out_channels, h, w].</returns>
    public override Tensor forward(Tensor sample, Tensor timestep, Tensor encoderHiddenStates)
    {
        using var scope = NewDisposeScope();
        if (sample.dim() != 4 || sample.shape[1] != Config.InChannels)
            throw new ArgumentException($"sample must be [B, {Config.InChannels}, h, w], got [{string.Join(", ", sample.shape)}]");
        if (encoderHiddenStates.dim() != 3 || encoderHiddenStates.shape[2] != Config.CrossAttentionDim)
            throw new ArgumentException($"encoder_hidden_states must be [B, L, {Config.CrossAttentionDim}], got [{string.Join(", ", encoderHiddenStates.shape)}]");
        long batch = sample.shape[0];
        var timesteps = timestep.dim() == 0 ? timestep.reshape(1).expand(batch) : timestep;
        if (timesteps.shape[0] != batch)
        {
            if (timesteps.shape[0] != 1) throw new ArgumentException($"timestep must be [B={batch}] or a scalar, got [{string.Join(", ", timestep.shape)}]");
            timesteps = timesteps.expand(batch);
        }
        timesteps = timesteps.to(sample.device);

        var tEmb = time_proj.forward(timesteps).to_type(sample.dtype);
        var emb = time_embedding.forward(tEmb);

        if (Config.CenterInputSample) sample = 2 * sample - 1.0;
        sample = conv_in.forward(sample);

        bool checkpoint = GradientCheckpointing && training && is_grad_enabled();
        if (checkpoint && Config.Dropout > 0)
            throw new DreamBoothException("gradient checkpointing with UNet config key 'dropout' > 0 is not supported (the recomputation would draw new dropout masks)");

        var skips = new List<Tensor> { sample };
        foreach (var block in down_blocks)
        {
            // a block's new state is also its last skip connection: under checkpointing only the skips are returned
            var blockSkips = checkpoint
                ? GradientCheckpoint.Run(x => block.Forward(x[0], x[1], x[2])[1..], [sample, emb, encoderHiddenStates], block.parameters())
                : block.Forward(sample, emb, encoderHiddenStates)[1..];
            sample = blockSkips[^1];
            skips.AddRange(blockSkips);
        }

        sample = checkpoint
            ? GradientCheckpoint.Run(x => [mid_block.forward(x[0], x[1], x[2])], [sample, emb, encoderHiddenStates], mid_block.parameters())[0]
            : mid_block.forward(sample, emb, encoderHiddenStates);

        for (int i = 0; i < up_blocks.Count; i++)
        {
            var block = up_blocks[i];
            bool isFinal = i == up_blocks.Count - 1;
            var res = skips.GetRange(skips.Count - block.SkipCount, block.SkipCount).ToArray();
            skips.RemoveRange(skips.Count - block.SkipCount, block.SkipCount);
            // upsample to the next skip's size, so odd latent sizes come back to their exact shape
            long[]? upsampleSize = isFinal ? null : [skips[^1].shape[2], skips[^1].shape[3]];
            if (checkpoint)
            {
                int k = res.Length;
                var inputs = new Tensor[] { sample, emb, encoderHiddenStates }.Concat(res).ToArray();
                sample = GradientCheckpoint.Run(x => [block.Forward(x[0], x[3..(3 + k)], x[1], x[2], upsampleSize)], inputs, block.parameters())[0];
            }
            else
            {
                sample = block.Forward(sample, res, emb, encoderHiddenStates, upsampleSize);
            }
        }

        sample = conv_out.forward(conv_act.forward(conv_norm_out.forward(sample)));
        return sample.MoveToOuterDisposeScope();
    }
}
