using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Models.Clip;

/// <summary>fc1 → activation (quick_gelu for CLIP ViT-L/14, or exact gelu) → fc2.</summary>
public sealed class CLIPMLP : nn.Module<Tensor, Tensor>
{
    private readonly Linear fc1;
    private readonly Linear fc2;
    private readonly string _act;

    public CLIPMLP(CLIPTextConfig config) : base(nameof(CLIPMLP))
    {
        _act = config.HiddenAct;
        fc1 = Layers.Linear(config.HiddenSize, config.IntermediateSize);
        fc2 = Layers.Linear(config.IntermediateSize, config.HiddenSize);
        RegisterComponents();
    }

    /// <summary>x·sigmoid(1.702·x), OpenAI CLIP's approximation of gelu.</summary>
    public static Tensor QuickGelu(Tensor x) => x * torch.sigmoid(x * 1.702);

    public override Tensor forward(Tensor hidden_states)
    {
        using var scope = torch.NewDisposeScope();
        var h = fc1.forward(hidden_states);
        h = _act switch
        {
            "quick_gelu" => QuickGelu(h),
            "gelu" => nn.functional.gelu(h),
            _ => throw new DreamBoothException($"hidden_act: unsupported activation \"{_act}\" (expected quick_gelu or gelu)"),
        };
        return fc2.forward(h).MoveToOuterDisposeScope();
    }
}
