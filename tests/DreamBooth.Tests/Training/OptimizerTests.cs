using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

public class OptimizerTests
{
    static Tensor Param(params float[] v) => torch.tensor(v).requires_grad_(true);

    static void SetGrad(Tensor p, params float[] g) => p.grad = torch.tensor(g);

    static float[] Values(Tensor t) => t.detach().cpu().to(ScalarType.Float32).data<float>().ToArray();

    [Fact]
    public void Lion_matches_its_update_rule_by_hand()
    {
        var p = Param(1.0f, -2.0f);
        using var opt = new Lion([new ParamGroup("unet", [p], learningRate: 0.1, weightDecay: 0.1)]);
        SetGrad(p, 0.5f, 0.3f);
        opt.Step();
        // p ← p(1−0.01) − 0.1·sign(0.1·g):  1·0.99−0.1 = 0.89 ; −2·0.99−0.1 = −2.08 ; m = 0.01·g
        Assert.Equal(0.89f, Values(p)[0], 6);
        Assert.Equal(-2.08f, Values(p)[1], 6);
        SetGrad(p, -0.2f, -0.2f);
        opt.Step();
        // c = 0.9·0.005 + 0.1·(−0.2) = −0.0155 → sign −1:  0.89·0.99 + 0.1 = 0.9811
        // c = 0.9·0.003 + 0.1·(−0.2) = −0.0173 → sign −1: −2.08·0.99 + 0.1 = −1.9592
        Assert.Equal(0.9811f, Values(p)[0], 6);
        Assert.Equal(-1.9592f, Values(p)[1], 6);
        var m = opt.StateDict()["unet/0/exp_avg"];
        // m = 0.99·0.005 + 0.01·(−0.2) = 0.00295 ; 0.99·0.003 − 0.002 = 0.00097
        Assert.Equal(0.00295f, Values(m)[0], 7);
        Assert.Equal(0.00097f, Values(m)[1], 7);
    }

    [Fact]
    public void Lion_momentum_decides_the_sign_not_only_the_gradient()
    {
        var p = Param(0f);
        using var opt = new Lion([new ParamGroup("g", [p], 1.0, 0.0)]);
        for (int i = 0; i < 20; i++) { SetGrad(p, 1f); opt.Step(); }   // m ≈ 0.18
        float before = Values(p)[0];
        SetGrad(p, -0.5f);   // β1·m + 0.1·g = 0.9·0.18 − 0.05 > 0: still moves down
        opt.Step();
        Assert.Equal(before - 1f, Values(p)[0], 5);
    }

    [Fact]
    public void AdamW_matches_its_update_rule_by_hand()
    {
        var p = Param(1.0f);
        using var opt = new AdamW([new ParamGroup("unet", [p], learningRate: 0.1, weightDecay: 0.1)]);
        SetGrad(p, 0.5f);
        opt.Step();
        // step 1: m̂ = g, v̂ = g², update = g/(|g|+ε) ≈ 1 → 1·0.99 − 0.1 = 0.89
        Assert.Equal(0.89f, Values(p)[0], 6);
        SetGrad(p, -0.2f);
        opt.Step();
        // m = 0.9·0.05 − 0.02 = 0.025 ; v = 0.999·0.00025 + 0.001·0.04 = 0.00028975
        // m̂ = 0.025/0.19 ; v̂ = 0.00028975/0.001999 ; p = 0.89·0.99 − 0.1·m̂/(√v̂+1e−8)
        double mh = 0.025 / 0.19, vh = 0.00028975 / 0.001999;
        double expected = 0.89 * 0.99 - 0.1 * mh / (Math.Sqrt(vh) + 1e-8);
        Assert.Equal(0.84653942, expected, 8);
        Assert.Equal((float)expected, Values(p)[0], 5);
    }

    [Fact]
    public void Parameter_groups_have_their_own_lr_and_weight_decay()
    {
        var a = Param(1f);
        var b = Param(1f);
        using var opt = new Lion([new ParamGroup("unet", [a], 0.1, 0.0), new ParamGroup("text_encoder", [b], 0.01, 0.5)]);
        SetGrad(a, 1f); SetGrad(b, 1f);
        opt.Step();
        Assert.Equal(0.9f, Values(a)[0], 6);
        Assert.Equal(1f * (1 - 0.01f * 0.5f) - 0.01f, Values(b)[0], 6);
        opt.Groups[1].Enabled = false;   // a frozen group does not move even with a gradient
        SetGrad(a, 1f); SetGrad(b, 1f);
        opt.Step();
        Assert.Equal(0.8f, Values(a)[0], 6);
        Assert.Equal(0.985f, Values(b)[0], 6);
        opt.DropState("text_encoder");
        Assert.DoesNotContain(opt.StateDict().Keys, k => k.StartsWith("text_encoder/"));
    }

    [Fact]
    public void Dynamic_quantization_map_has_256_sorted_codes()
    {
        var s = BlockwiseQuantizer.DynamicMap(signed: true);
        var u = BlockwiseQuantizer.DynamicMap(signed: false);
        Assert.Equal(256, s.Length);
        Assert.Equal(256, u.Length);
        Assert.Equal(s.Order().ToArray(), s);
        Assert.Contains(0f, s); Assert.Equal(1f, s[^1]); Assert.Equal(-0.9928f, s[0], 3); Assert.Equal(0.9928f, s[^2], 3);
        Assert.Equal(0f, u[0]); Assert.Equal(1f, u[^1]);
        Assert.True(u.All(v => v >= 0));
        // the smallest nonzero magnitude is 10^-6 · 0.55 (fraction midpoint of level 0)
        Assert.Equal(0.55e-6f, s.Where(v => v > 0).Min(), 9);
    }

    [Fact]
    public void Blockwise_quantization_round_trips_within_the_code_spacing()
    {
        using var q = new BlockwiseQuantizer(signed: true);
        var gen = new torch.Generator(7);
        var x = torch.randn([5000], generator: gen) * torch.linspace(1e-4, 3, 5000);
        var (codes, absmax) = q.Quantize(x);
        Assert.Equal(ScalarType.Byte, codes.dtype);
        Assert.Equal(3 * 2048, codes.shape[0]);
        Assert.Equal(3, absmax.shape[0]);
        var y = q.Dequantize(codes, absmax, x.shape);
        // the largest gap between neighbouring codes is 0.9/64 ≈ 0.014 near 1: error ≤ half of it × absmax
        var err = (y - x).abs().view(-1);
        var am = torch.cat([absmax.repeat_interleave(2048L)]).narrow(0, 0, 5000);
        Assert.True((err <= am * 0.0071).all().item<bool>());
        // block maxima survive exactly
        Assert.Equal(x.abs().max().item<float>(), y.abs().max().item<float>(), 5);
    }

    [Fact]
    public void AdamW8bit_stores_one_byte_per_value_and_tracks_fp32_AdamW()
    {
        var gen = new torch.Generator(1);
        var init = torch.randn([100, 100], generator: gen);
        var p8 = init.clone().requires_grad_(true);
        var p32 = init.clone().requires_grad_(true);
        var small8 = torch.ones(10).requires_grad_(true);
        var small32 = torch.ones(10).requires_grad_(true);
        using var o8 = new AdamW8bit([new ParamGroup("unet", [p8, small8], 1e-3, 0.01)]);
        using var o32 = new AdamW([new ParamGroup("unet", [p32, small32], 1e-3, 0.01)]);
        for (int i = 0; i < 10; i++)
        {
            var g = torch.randn([100, 100], generator: gen);
            var gs = torch.randn([10], generator: gen);
            p8.grad = g.clone(); p32.grad = g.clone();
            small8.grad = gs.clone(); small32.grad = gs.clone();
            o8.Step(); o32.Step();
        }
        // small tensors (< 4096 values) keep fp32 moments: identical to AdamW
        Assert.Equal(Values(small32), Values(small8));
        // quantized moments: the update follows fp32 AdamW closely (10 steps of lr 1e-3 move each weight ≤ 1e-2)
        var moved = (p32 - init).abs().mean().item<float>();
        var diff = (p8 - p32).abs().mean().item<float>();
        Assert.True(moved > 2e-3, $"moved {moved}");
        Assert.True(diff < 0.05 * moved, $"8-bit deviates {diff} vs movement {moved}");
        Assert.NotEqual(0f, diff);   // it really is quantized
        // state: 2 bytes per value of the big tensor + 2 absmax floats per block, vs 8 bytes in fp32
        long big = 10000;
        Assert.Equal(2 * 5 * 2048 + 2 * 5 * 4 + 2 * 10 * 4, o8.StateBytes);
        Assert.Equal(8 * big + 8 * 10, o32.StateBytes);
    }

    [Fact]
    public void State_save_and_load_continues_identically()
    {
        foreach (var name in TrainingConfig.Optimizers)
        {
            var gen = new torch.Generator(3);
            var init = torch.randn([70, 70], generator: gen);
            var grads = Enumerable.Range(0, 6).Select(_ => torch.randn([70, 70], generator: gen)).ToArray();
            var a = init.clone().requires_grad_(true);
            using var oa = TrainingOptimizer.Create(name, [new ParamGroup("unet", [a], 1e-3, 0.1)]);
            for (int i = 0; i < 6; i++) { a.grad = grads[i].clone(); oa.Step(); }

            var b = init.clone().requires_grad_(true);
            using var ob = TrainingOptimizer.Create(name, [new ParamGroup("unet", [b], 1e-3, 0.1)]);
            for (int i = 0; i < 3; i++) { b.grad = grads[i].clone(); ob.Step(); }
            using var dir = Infrastructure.TestPaths.NewTempDir();
            TensorStateFile.Save(dir.File("opt.state"), ob.StateDict());
            var c = b.detach().clone().requires_grad_(true);
            using var oc = TrainingOptimizer.Create(name, [new ParamGroup("unet", [c], 1e-3, 0.1)]);
            oc.LoadStateDict(TensorStateFile.Load(dir.File("opt.state")));
            for (int i = 3; i < 6; i++) { c.grad = grads[i].clone(); oc.Step(); }
            Assert.True(a.BitEqual(c), $"{name}: resumed run differs");
        }
    }

    [Fact]
    public void Zero_grad_sets_gradients_to_none()
    {
        var p = Param(1f);
        using var opt = new Lion([new ParamGroup("g", [p], 0.1, 0)]);
        SetGrad(p, 1f);
        opt.ZeroGrad();
        Assert.Null(p.grad);
        opt.Step();   // no gradient: no update
        Assert.Equal(1f, Values(p)[0]);
    }
}
