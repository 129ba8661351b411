using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>diffusers <c>UpBlock2D</c>: (concat skip → resnet) × layers, then an optional nearest 2× upsampler.</summary>
public sealed class UpBlock2D : UNetUpBlock
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Upsample2D>? upsamplers;

    public UpBlock2D(long inChannels, long prevOutputChannel, long outChannels, long tembChannels, int numLayers,
        double resnetEps, int resnetGroups, bool addUpsample, double dropout = 0.0, double outputScaleFactor = 1.0)
        : base(nameof(UpBlock2D))
    {
        resnets = nn.ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
        {
            long resSkipChannels = i == numLayers - 1 ? inChannels : outChannels;
            long resnetInChannels = i == 0 ? prevOutputChannel : outChannels;
            resnets.Add(new ResnetBlock2D(resnetInChannels + resSkipChannels, outChannels, tembChannels, resnetGroups, resnetEps, dropout, outputScaleFactor));
        }
        if (addUpsample) upsamplers = nn.ModuleList(new Upsample2D(outChannels, outChannels));
        RegisterComponents();
    }

    public override int SkipCount => resnets.Count;

    public override Tensor Forward(Tensor hidden_states, IReadOnlyList<Tensor> res_hidden_states, Tensor temb,
        Tensor encoder_hidden_states, long[]? upsample_size)
    {
        using var scope = NewDisposeScope();
        for (int i = 0; i < resnets.Count; i++)
        {
            var res = res_hidden_states[res_hidden_states.Count - 1 - i];
            hidden_states = cat([hidden_states, res], 1);
            hidden_states = resnets[i].forward(hidden_states, temb);
        }
        if (upsamplers is not null) hidden_states = upsamplers[0].forward(hidden_states, upsample_size);
        return hidden_states.MoveToOuterDisposeScope();
    }
}
