using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Vae;

/// <summary>
/// diffusers VAE <c>Decoder</c>: conv_in, mid block with attention, UpDecoderBlock2D per block (reversed widths,
/// upsampling all but the last), GroupNorm/SiLU, conv_out to image channels.
/// </summary>
public sealed class Decoder : nn.Module<Tensor, Tensor>
{
    readonly Conv2d conv_in;
    readonly UNetMidBlock2D mid_block;
    readonly ModuleList<UpDecoderBlock2D> up_blocks;
    readonly GroupNorm conv_norm_out;
    readonly SiLU conv_act;
    readonly Conv2d conv_out;

    public Decoder(int inChannels, int outChannels, IReadOnlyList<int> blockOutChannels, int layersPerBlock, int normNumGroups)
        : base(nameof(Decoder))
    {
        const double eps = 1e-6;
        int n = blockOutChannels.Count;
        conv_in = Layers.Conv2d(inChannels, blockOutChannels[n - 1], 3, stride: 1, padding: 1);
        mid_block = new UNetMidBlock2D(blockOutChannels[n - 1], eps, normNumGroups);
        up_blocks = nn.ModuleList<UpDecoderBlock2D>();
        var reversed = blockOutChannels.Reverse().ToArray();
        int outputChannel = reversed[0];
        for (int i = 0; i < n; i++)
        {
            int prevOutputChannel = outputChannel;
            outputChannel = reversed[i];
            up_blocks.Add(new UpDecoderBlock2D(prevOutputChannel, outputChannel, layersPerBlock + 1, eps, normNumGroups, addUpsample: i != n - 1));
        }
        conv_norm_out = Layers.GroupNorm(normNumGroups, blockOutChannels[0], eps);
        conv_act = nn.SiLU();
        conv_out = Layers.Conv2d(blockOutChannels[0], outChannels, 3, stride: 1, padding: 1);
        RegisterComponents();
    }

    public override Tensor forward(Tensor z)
    {
        using var scope = NewDisposeScope();
        var sample = conv_in.forward(z);
        sample = mid_block.forward(sample);
        foreach (var block in up_blocks) sample = block.forward(sample);
        sample = conv_out.forward(conv_act.forward(conv_norm_out.forward(sample)));
        return sample.MoveToOuterDisposeScope();
    }
}
