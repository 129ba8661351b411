using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>
/// diffusers VAE <c>Encoder</c>: conv_in, DownEncoderBlock2D per block (downsampling all but the last), mid block
/// with attention, GroupNorm/SiLU, conv_out to 2·latent channels (mean and log-variance).
/// </summary>
public sealed class Encoder : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv_in;
    readonly ModuleList<DownEncoderBlock2D> down_blocks;
    readonly UNetMidBlock2D mid_block;
    readonly GroupNorm conv_norm_out;
    readonly SiLU conv_act;
    readonly Conv2d conv_out;

    public Encoder(int inChannels, int outChannels, IReadOnlyList<int> blockOutChannels, int layersPerBlock, int normNumGroups,
        bool doubleZ = true) : base(nameof(Encoder))
    {
        const double eps = 1e-6;
        int n = blockOutChannels.Count;
        conv_in = Layers.Conv2d(inChannels, blockOutChannels[0], 3, stride: 1, padding: 1);
        down_blocks = nn.ModuleList<DownEncoderBlock2D>();
        int outputChannel = blockOutChannels[0];
        for (int i = 0; i < n; i++)
        {
            int inputChannel = outputChannel;
            outputChannel = blockOutChannels[i];
            down_blocks.Add(new DownEncoderBlock2D(inputChannel, outputChannel, layersPerBlock, eps, normNumGroups,
                addDownsample: i != n - 1, downsamplePadding: 0));
        }
        mid_block = new UNetMidBlock2D(blockOutChannels[n - 1], eps, normNumGroups);
        conv_norm_out = Layers.GroupNorm(normNumGroups, blockOutChannels[n - 1], eps);
        conv_act = nn.SiLU();
        conv_out = Layers.Conv2d(blockOutChannels[n - 1], doubleZ ? 2L * outChannels : outChannels, 3, stride: 1, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor sample)
    {
        using var scope = NewDisposeScope();
        sample = conv_in.forward(sample);
        foreach (var block in down_blocks) sample = block.forward(sample);
        sample = mid_block.forward(sample);
        sample = conv_out.forward(conv_act.forward(conv_norm_out.forward(sample)));
        return sample.MoveToOuterDisposeScope();
    }
}
