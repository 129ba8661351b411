using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

public class FlatLionTests
{
    static readonly long[][] Shapes = [[3, 5], [7], [2, 3, 4, 4], [1], [33]];

    static List<Tensor> Params(long seed)
    {
        var gen = new Generator((ulong)seed);
        return Shapes.Select(s => torch.randn(s, generator: gen).requires_grad_(true)).ToList();
    }

    static float MaxAbsDiff(Tensor a, Tensor b) => (a.detach().to(ScalarType.Float32) - b.detach().to(ScalarType.Float32)).abs().max().item<float>();

    [Theory]
    [InlineData(7L)]       // chunk boundaries inside parameters
    [InlineData(1L << 24)] // one chunk
    public void Matches_per_tensor_Lion_step_for_step(long chunk)
    {
        var a = Params(1);
        var b = Params(1);
        using var lion = new Lion([new ParamGroup("unet", a, learningRate: 1e-3, weightDecay: 0.1)]);
        using var flat = new FlatLion([new ParamGroup("unet", b, learningRate: 1e-3, weightDecay: 0.1)], chunkElements: chunk);
        var gen = new Generator(7);
        for (int step = 0; step < 6; step++)
        {
            flat.ZeroGrad();
            for (int i = 0; i < a.Count; i++)
            {
                using var g = torch.randn(a[i].shape, generator: gen);
                if (step == 3 && i == 1)
                {
                    // no gradient for this parameter at this step: both leave it (and its momentum) alone
                    a[i].grad = null;
                    b[i].grad = null;
                    continue;
                }
                a[i].grad = g.clone();
                using (torch.no_grad()) { using var bg = b[i].grad!; bg.copy_(g); }
            }
            lion.Step();
            flat.Step();
            for (int i = 0; i < a.Count; i++)
                Assert.True(MaxAbsDiff(a[i], b[i]) == 0f, $"step {step} param {i}: {MaxAbsDiff(a[i], b[i])}");
        }
        var sa = lion.StateDict();
        var sb = flat.StateDict();
        for (int i = 0; i < a.Count; i++)
        {
            Assert.True(MaxAbsDiff(sa[$"unet/{i}/exp_avg"], sb[$"unet/{i}/exp_avg"]) == 0f);
            Assert.Equal(Shapes[i], sb[$"unet/{i}/exp_avg"].shape);
        }
    }

    [Fact]
    public void Backward_accumulates_into_the_flat_buffer_and_matches_Lion_on_a_module()
    {
        manual_seed(3);
        var netA = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 2));
        var netB = nn.Sequential(nn.Linear(6, 5), nn.GELU(), nn.Linear(5, 2));
        netB.load_state_dict(netA.state_dict());
        using var lion = new Lion([new ParamGroup("g", netA.parameters().Cast<Tensor>().ToList(), 1e-2, 0.0)]);
        using var flat = new FlatLion([new ParamGroup("g", netB.parameters().Cast<Tensor>().ToList(), 1e-2, 0.0)]);
        var x = torch.randn(4, 6);
        for (int step = 0; step < 4; step++)
        {
            lion.ZeroGrad();
            flat.ZeroGrad();
            netA.forward(x).square().mean().backward();
            netB.forward(x).square().mean().backward();
            lion.Step();
            flat.Step();
        }
        foreach (var ((name, pa), (_, pb)) in netA.named_parameters().Zip(netB.named_parameters()))
            Assert.True(MaxAbsDiff(pa, pb) == 0f, $"{name}: {MaxAbsDiff(pa, pb)}");
        // the module's parameters really are views of one buffer: changing the module changes what the optimizer steps
        Assert.Equal(2, netB.forward(x).shape[1]);
    }

    [Fact]
    public void Works_with_master_weights_that_assign_their_own_gradients()
    {
        manual_seed(5);
        var netA = nn.Linear(4, 3);
        var netB = nn.Linear(4, 3);
        netB.load_state_dict(netA.state_dict());
        using var mwA = new MasterWeights(netA, ScalarType.BFloat16);
        using var mwB = new MasterWeights(netB, ScalarType.BFloat16);
        using var lion = new Lion([new ParamGroup("g", mwA.Masters, 1e-2, 0.01)]);
        using var flat = new FlatLion([new ParamGroup("g", mwB.Masters, 1e-2, 0.01)]);
        var x = torch.randn(5, 4).to(ScalarType.BFloat16);
        for (int step = 0; step < 3; step++)
        {
            netA.forward(x).to(ScalarType.Float32).square().mean().backward();
            netB.forward(x).to(ScalarType.Float32).square().mean().backward();
            Assert.True(mwA.CopyGradsToMasters());
            Assert.True(mwB.CopyGradsToMasters());
            lion.Step();
            flat.Step();
            mwA.CopyMastersToModel();
            mwB.CopyMastersToModel();
            lion.ZeroGrad();
            flat.ZeroGrad();
        }
        for (int i = 0; i < mwA.Masters.Count; i++)
            Assert.True(MaxAbsDiff(mwA.Masters[i], mwB.Masters[i]) == 0f);
        Assert.True(MaxAbsDiff(netA.weight, netB.weight) == 0f);
    }
}
