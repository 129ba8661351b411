using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.UNet;

/// <summary>diffusers <c>DownBlock2D</c>: resnets, then an optional stride-2 downsampler; every output is a skip connection.</summary>
public sealed class DownBlock2D : UNetDownBlock
{
    readonly ModuleList<ResnetBlock2D> resnets;
    readonly ModuleList<Downsample2D>? downsamplers;

    public DownBlock2D(long inChannels, long outChannels, long tembChannels, int numLayers, double resnetEps,
        int resnetGroups, bool addDownsample, int downsamplePadding = 1, double dropout = 0.0,
        double outputScaleFactor = 1.0) : base(nameof(DownBlock2D))
    {
        resnets = nn.ModuleList<ResnetBlock2D>();
        for (int i = 0; i < numLayers; i++)
            resnets.Add(new ResnetBlock2D(i == 0 ? inChannels : outChannels, outChannels, tembChannels, resnetGroups, resnetEps, dropout, outputScaleFactor));
        if (addDownsample) downsamplers = nn.ModuleList(new Downsample2D(outChannels, outChannels, downsamplePadding));
        RegisterComponents();
    }

    public override int SkipCount => resnets.Count + (downsamplers is null ? 0 : 1);

    public override Tensor[] Forward(Tensor hidden_states, Tensor temb, Tensor encoder_hidden_states)
    {
        using var scope = NewDisposeScope();
        var outputs = new List<Tensor>();
        foreach (var resnet in resnets)
        {
            hidden_states = resnet.forward(hidden_states, temb);
            outputs.Add(hidden_states);
        }
        if (downsamplers is not null)
        {
            hidden_states = downsamplers[0].forward(hidden_states);
            outputs.Add(hidden_states);
        }
        outputs.Insert(0, hidden_states);
        var result = outputs.ToArray();
        scope.MoveToOuter(result);
        return result;
    }
}
