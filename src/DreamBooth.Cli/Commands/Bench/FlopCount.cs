using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;

namespace DreamBooth.Cli.Commands.Bench;

/// <summary>
/// Model FLOPs counted from a config, as for MFU: the multiply-adds of every convolution and matrix product
/// (attention's QKᵀ and AV included), 1 MAC = 2 FLOP; norms, activations, softmax and element-wise work not counted.
/// The architecture is the one <see cref="UNet2DConditionModel"/> builds (diffusers' block layout: resnets with a
/// time projection and a 1×1 shortcut when channels change, one transformer per attention with self-attention,
/// cross-attention over the text context and a GEGLU feed-forward, strided-conv downsamplers, nearest + conv
/// upsamplers, up blocks with layers_per_block + 1 resnets over concatenated skips).
/// SD1.5 at a 64×64 latent: 401.6 GMAC = 0.803 TFLOP per sample (the TensorRT deck quoted in docs/benchmarks.md:
/// 0.84, which also counts some element-wise work); the self-attention core at the 64×64 level 53.7 GMAC.
/// </summary>
public static class FlopCount
{
    /// <summary>Multiply-adds of one UNet forward for one sample at a latent of <paramref name="height"/>×<paramref name="width"/>.</summary>
    public static double UNetForwardMacs(UNet2DConditionConfig c, int height, int width, int contextLength = 77)
    {
        const double timeEmbedDimFactor = 4; // TimestepEmbedding: block_out_channels[0] → 4 × that
        var boc = c.BlockOutChannels;
        int n = boc.Count, lpb = c.LayersPerBlock, temb = (int)(boc[0] * timeEmbedDimFactor);
        double dc = c.CrossAttentionDim, l = contextLength;
        double Conv(int k, double ci, double co, double h, double w) => k * k * ci * co * h * w;
        double Resnet(double ci, double co, double h, double w) =>
            Conv(3, ci, co, h, w) + temb * co + Conv(3, co, co, h, w) + (ci != co ? Conv(1, ci, co, h, w) : 0);
        double Transformer(double ch, double h, double w)
        {
            double tokens = h * w;
            double projIn = ch * ch * tokens, projOut = ch * ch * tokens;
            double self = 4 * ch * ch * tokens + 2 * tokens * tokens * ch;                 // q, k, v, out; QKᵀ, AV
            double cross = 2 * ch * ch * tokens + 2 * dc * ch * l + 2 * tokens * l * ch;    // q, out; k, v of the context; QKᵀ, AV
            double feedForward = ch * 8 * ch * tokens + 4 * ch * ch * tokens;               // GEGLU proj (2 × 4C), out
            return projIn + self + cross + feedForward + projOut;
        }

        double macs = Conv(3, c.InChannels, boc[0], height, width) + boc[0] * temb + (double)temb * temb;
        double hh = height, ww = width;
        int output = boc[0];
        for (int i = 0; i < n; i++)
        {
            int input = output;
            output = boc[i];
            for (int j = 0; j < lpb; j++)
            {
                macs += Resnet(j == 0 ? input : output, output, hh, ww);
                if (c.DownBlockTypes[i] == "CrossAttnDownBlock2D") macs += Transformer(output, hh, ww);
            }
            if (i < n - 1)
            {
                hh = Math.Ceiling(hh / 2);
                ww = Math.Ceiling(ww / 2);
                macs += Conv(3, output, output, hh, ww);
            }
        }
        int mid = boc[^1];
        macs += 2 * Resnet(mid, mid, hh, ww) + Transformer(mid, hh, ww);

        var reversed = boc.Reverse().ToArray();
        int upOut = reversed[0];
        for (int i = 0; i < n; i++)
        {
            int prev = upOut;
            upOut = reversed[i];
            int input = reversed[Math.Min(i + 1, n - 1)];
            for (int j = 0; j <= lpb; j++)
            {
                int skip = j == lpb ? input : upOut;
                macs += Resnet((j == 0 ? prev : upOut) + skip, upOut, hh, ww);
                if (c.UpBlockTypes[i] == "CrossAttnUpBlock2D") macs += Transformer(upOut, hh, ww);
            }
            if (i < n - 1)
            {
                hh *= 2;
                ww *= 2;
                macs += Conv(3, upOut, upOut, hh, ww);
            }
        }
        return macs + Conv(3, boc[0], c.OutChannels, height, width);
    }

    /// <summary>Multiply-adds of one CLIP text-encoder forward for one prompt of <paramref name="tokens"/> tokens.</summary>
    public static double ClipForwardMacs(CLIPTextConfig c, int tokens = 77)
    {
        double d = c.HiddenSize, t = tokens, inner = c.IntermediateSize;
        double layer = 4 * d * d * t + 2 * t * t * d + 2 * d * inner * t;
        return c.NumHiddenLayers * layer;
    }

    /// <summary>
    /// Model FLOPs of one DreamBooth step: 2 samples (instance + prior), forward + backward = 3 forwards for the UNet,
    /// and for the text encoder when it is trained (its forward alone when it runs frozen each step; 0 when its
    /// embeddings are cached). Gradient-checkpointing recomputation is not counted (as in MFU).
    /// </summary>
    public static double TrainStepFlops(UNet2DConditionConfig unet, CLIPTextConfig textEncoder, int latentHeight, int latentWidth,
        bool trainTextEncoder, int samples = 2)
    {
        double unetFlops = 2 * UNetForwardMacs(unet, latentHeight, latentWidth, textEncoder.MaxPositionEmbeddings) * 3 * samples;
        double teFlops = trainTextEncoder ? 2 * ClipForwardMacs(textEncoder, textEncoder.MaxPositionEmbeddings) * 3 * samples : 0;
        return unetFlops + teFlops;
    }
}
