using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>
/// diffusers <c>AutoencoderKL</c>: encoder → quant_conv → diagonal Gaussian posterior; post_quant_conv → decoder.
/// Keys match diffusers' <c>vae/diffusion_pytorch_model.safetensors</c> by construction.
/// Large batches or images can be decoded one image at a time (<see cref="EnableSlicing"/>) and/or in overlapping
/// latent tiles blended linearly as diffusers' <c>tiled_decode</c> does (<see cref="EnableTiling"/>).
/// </summary>
public sealed class AutoencoderKL : nn.Module
{
    readonly Encoder encoder;
    readonly Decoder decoder;
    readonly Conv2d quant_conv;
    readonly Conv2d post_quant_conv;

    public AutoencoderKLConfig Config { get; }

    /// <summary>Encode and decode one image of the batch at a time (same result, lower peak memory).</summary>
    public bool EnableSlicing { get; set; }

    /// <summary>Decode latents larger than one tile in overlapping tiles blended at the seams (approximate, bounded memory).</summary>
    public bool EnableTiling { get; set; }

    /// <summary>Tile size in pixels (diffusers: config.sample_size); the latent tile is this / <see cref="DownsampleFactor"/>.</summary>
    public int TileSampleMinSize { get; set; }

    /// <summary>Fraction of a tile that overlaps its neighbour (diffusers: 0.25).</summary>
    public double TileOverlapFactor { get; set; } = 0.25;

    /// <summary>Pixels per latent along each axis (8 for SD, 2 for <see cref="AutoencoderKLConfig.Tiny"/>).</summary>
    public int DownsampleFactor => Config.DownsampleFactor;

    public AutoencoderKL(AutoencoderKLConfig config) : base(nameof(AutoencoderKL))
    {
        config.Validate();
        Config = config;
        TileSampleMinSize = config.SampleSize;
        encoder = new Encoder(config.InChannels, config.LatentChannels, config.BlockOutChannels, config.LayersPerBlock, config.NormNumGroups);
        decoder = new Decoder(config.LatentChannels, config.OutChannels, config.BlockOutChannels, config.LayersPerBlock, config.NormNumGroups);
        quant_conv = Layers.Conv2d(2L * config.LatentChannels, 2L * config.LatentChannels, 1);
        post_quant_conv = Layers.Conv2d(config.LatentChannels, config.LatentChannels, 1);
        RegisterComponents();
    }

    /// <param name="images">[B, 3, H, W] in [−1, 1]; H and W multiples of <see cref="DownsampleFactor"/>.</param>
    /// <returns>the posterior over unscaled latents [B, latent_channels, H/f, W/f].</returns>
    public DiagonalGaussianDistribution Encode(Tensor images)
    {
        if (images.dim() != 4 || images.shape[1] != Config.InChannels)
            throw new ArgumentException($"images must be [B, {Config.InChannels}, H, W], got [{string.Join(", ", images.shape)}]");
        Tensor moments;
        using (var scope = NewDisposeScope())
        {
            moments = EnableSlicing && images.shape[0] > 1
                ? cat(images.split(1, 0).Select(x => quant_conv.forward(encoder.forward(x))).ToArray(), 0)
                : quant_conv.forward(encoder.forward(images));
            moments.MoveToOuterDisposeScope();
        }
        using (moments) return new DiagonalGaussianDistribution(moments);
    }

    /// <param name="latents">[B, latent_channels, h, w], NOT scaled (the caller divides by scaling_factor first).</param>
    /// <returns>images [B, 3, h·f, w·f], roughly in [−1, 1].</returns>
    public Tensor Decode(Tensor latents)
    {
        using var scope = NewDisposeScope();
        if (latents.dim() != 4 || latents.shape[1] != Config.LatentChannels)
            throw new ArgumentException($"latents must be [B, {Config.LatentChannels}, h, w], got [{string.Join(", ", latents.shape)}]");
        Tensor result;
        if (EnableSlicing && latents.shape[0] > 1)
            result = cat(latents.split(1, 0).Select(DecodeOne).ToArray(), 0);
        else
            result = DecodeOne(latents);
        return result.MoveToOuterDisposeScope();
    }

    Tensor DecodeOne(Tensor z)
    {
        int tileLatent = TileLatentMinSize;
        if (EnableTiling && (z.shape[2] > tileLatent || z.shape[3] > tileLatent)) return TiledDecode(z);
        return decoder.forward(post_quant_conv.forward(z));
    }

    int TileLatentMinSize => Math.Max(1, TileSampleMinSize / DownsampleFactor);

    /// <summary>
    /// diffusers' tiled decode: latent tiles of <c>tile_latent_min_size</c> every <c>tile·(1−overlap)</c> latents, each
    /// decoded alone, blended linearly with the tile above and the tile to the left over <c>tile_sample·overlap</c> pixels,
    /// cropped to <c>tile_sample − blend</c> and stitched.
    /// </summary>
    Tensor TiledDecode(Tensor z)
    {
        int tileLatent = TileLatentMinSize;
        int tileSample = tileLatent * DownsampleFactor;
        int overlapSize = Math.Max(1, (int)(tileLatent * (1 - TileOverlapFactor)));
        int blendExtent = (int)(tileSample * TileOverlapFactor);
        int rowLimit = tileSample - blendExtent;
        long h = z.shape[2], w = z.shape[3];

        var rows = new List<List<Tensor>>();
        for (long i = 0; i < h; i += overlapSize)
        {
            var row = new List<Tensor>();
            for (long j = 0; j < w; j += overlapSize)
            {
                var tile = z[.., .., (int)i..(int)Math.Min(i + tileLatent, h), (int)j..(int)Math.Min(j + tileLatent, w)];
                row.Add(decoder.forward(post_quant_conv.forward(tile)));
            }
            rows.Add(row);
        }

        var resultRows = new List<Tensor>();
        for (int i = 0; i < rows.Count; i++)
        {
            var resultRow = new List<Tensor>();
            for (int j = 0; j < rows[i].Count; j++)
            {
                var tile = rows[i][j];
                if (i > 0) tile = BlendVertical(rows[i - 1][j], tile, blendExtent);
                if (j > 0) tile = BlendHorizontal(rows[i][j - 1], tile, blendExtent);
                rows[i][j] = tile; // later neighbours blend with the already-blended tile, as diffusers' in-place version does
                long th = Math.Min(rowLimit, tile.shape[2]), tw = Math.Min(rowLimit, tile.shape[3]);
                resultRow.Add(tile[.., .., ..(int)th, ..(int)tw]);
            }
            resultRows.Add(cat(resultRow.ToArray(), 3));
        }
        return cat(resultRows.ToArray(), 2);
    }

    /// <summary>The first <paramref name="extent"/> rows of <paramref name="b"/> fade in from the last rows of <paramref name="a"/>.</summary>
    internal static Tensor BlendVertical(Tensor a, Tensor b, int extent)
    {
        extent = (int)Math.Min(Math.Min(a.shape[2], b.shape[2]), extent);
        if (extent <= 0) return b;
        var weight = arange(extent, dtype: b.dtype, device: b.device).div(extent).view(1, 1, extent, 1);
        var top = a[.., .., (int)(a.shape[2] - extent).., ..] * (1 - weight) + b[.., .., ..extent, ..] * weight;
        return cat([top, b[.., .., extent.., ..]], 2);
    }

    /// <summary>The first <paramref name="extent"/> columns of <paramref name="b"/> fade in from the last columns of <paramref name="a"/>.</summary>
    internal static Tensor BlendHorizontal(Tensor a, Tensor b, int extent)
    {
        extent = (int)Math.Min(Math.Min(a.shape[3], b.shape[3]), extent);
        if (extent <= 0) return b;
        var weight = arange(extent, dtype: b.dtype, device: b.device).div(extent).view(1, 1, 1, extent);
        var left = a[.., .., .., (int)(a.shape[3] - extent)..] * (1 - weight) + b[.., .., .., ..extent] * weight;
        return cat([left, b[.., .., .., extent..]], 3);
    }
}
