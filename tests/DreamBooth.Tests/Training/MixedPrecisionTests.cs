using DreamBooth.Training;
using DreamBooth.Training.Optimizers;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

public class MixedPrecisionTests
{
    [Fact]
    public void A_1e7_step_moves_the_fp32_masters_and_would_not_move_a_bf16_weight()
    {
        torch.manual_seed(0);
        var lin = nn.Linear(8, 4);
        using (torch.no_grad()) { lin.weight!.fill_(0.01f); lin.bias!.fill_(0.01f); }
        using var master = new MasterWeights(lin, ScalarType.BFloat16);
        Assert.Equal(ScalarType.BFloat16, lin.weight!.dtype);
        Assert.All(master.Masters, m => Assert.Equal(ScalarType.Float32, m.dtype));
        var before = master.Masters[0].clone();
        var bf16Before = lin.weight!.detach().clone();

        using var opt = new Lion([new ParamGroup("unet", master.Masters, 1e-7, 0.0)]);
        var x = torch.randn(2, 8).to(ScalarType.BFloat16);
        var loss = lin.forward(x).to(ScalarType.Float32).pow(2).mean();
        loss.backward();
        Assert.True(master.CopyGradsToMasters());
        Assert.Null(lin.weight!.grad);   // compute grads are released
        opt.Step();
        master.CopyMastersToModel();

        // the fp32 master moved by exactly lr (Lion's update is ±lr per element)
        var delta = (master.Masters[0] - before).abs();
        Assert.True(delta.allclose(torch.full_like(delta, 1e-7), rtol: 0, atol: 1e-9));
        // the bf16 compute copy (what a bf16-stored weight would be) cannot represent the change
        Assert.True(lin.weight!.detach().BitEqual(bf16Before));

        // and a bf16-stored weight stepped directly by the same optimizer does not change at all
        var w16 = torch.full(4, 0.01f).to(ScalarType.BFloat16).requires_grad_(true);
        using var opt16 = new Lion([new ParamGroup("bf16", [w16], 1e-7, 0.0)]);
        w16.grad = torch.ones(4).to(ScalarType.BFloat16);
        var w16Before = w16.detach().clone();
        opt16.Step();
        Assert.True(w16.detach().BitEqual(w16Before));
    }

    [Fact]
    public void Many_small_steps_accumulate_in_the_masters_and_reach_the_compute_copy()
    {
        var lin = nn.Linear(4, 1, hasBias: false);
        using (torch.no_grad()) lin.weight!.fill_(0.01f);
        using var master = new MasterWeights(lin, ScalarType.BFloat16);
        using var opt = new Lion([new ParamGroup("unet", master.Masters, 1e-5, 0.0)]);
        for (int i = 0; i < 100; i++)
        {
            master.Masters[0].grad = torch.ones(1, 4);
            opt.Step();
            master.CopyMastersToModel();
        }
        // 100 × 1e-5 = 1e-3 below 0.01: visible in bf16 too
        Assert.Equal(0.009f, master.Masters[0][0, 0].item<float>(), 6);
        Assert.Equal(0.009f, lin.weight!.detach().to(ScalarType.Float32)[0, 0].item<float>(), 4);
    }

    [Fact]
    public void Fp32_compute_shares_the_parameters()
    {
        var lin = nn.Linear(3, 2);
        using var master = new MasterWeights(lin, ScalarType.Float32);
        Assert.Same(lin.weight, master.Masters[0]);
    }

    [Fact]
    public void Fp16_loss_scaling_unscales_grads_and_skips_overflow()
    {
        var lin = nn.Linear(2, 1, hasBias: false);
        using (torch.no_grad()) lin.weight!.fill_(1f);
        using var master = new MasterWeights(lin, ScalarType.Float16);
        var scaler = new LossScaler(enabled: true, initialScale: 1024, growthInterval: 2);
        var x = torch.tensor(new float[] { 1, 2 }).view(1, 2).to(ScalarType.Float16);
        var loss = lin.forward(x).to(ScalarType.Float32).sum();
        (loss * scaler.Scale).backward();
        Assert.True(master.CopyGradsToMasters(1.0 / scaler.Scale));
        Assert.Equal(new float[] { 1, 2 }, master.Masters[0].grad!.data<float>().ToArray());
        scaler.Update(true);
        Assert.Equal(1024, scaler.Scale);
        scaler.Update(true);
        Assert.Equal(2048, scaler.Scale);   // grows after growthInterval clean steps

        lin.weight!.grad = torch.tensor(new float[] { float.PositiveInfinity, 0 }).view(1, 2).to(ScalarType.Float16);
        Assert.False(master.CopyGradsToMasters(1.0 / scaler.Scale));
        scaler.Update(false);
        Assert.Equal(1024, scaler.Scale);
    }

    [Fact]
    public void One_read_brings_back_both_groups_norms_and_they_catch_a_non_finite_gradient()
    {
        // the trainer's look at its gradients: grads → masters and a norm per group, read back in one transfer; a
        // non-finite gradient anywhere makes its group's norm non-finite (the step is then skipped)
        var unet = nn.Linear(3, 2);
        var te = nn.Linear(2, 2);
        using var mu = new MasterWeights(unet, ScalarType.Float16);
        using var mt = new MasterWeights(te, ScalarType.Float16);
        void Grads(float last)
        {
            unet.weight!.grad = torch.ones(2, 3).to(ScalarType.Float16);
            unet.bias!.grad = torch.ones(2).to(ScalarType.Float16);
            te.weight!.grad = torch.ones(2, 2).to(ScalarType.Float16);
            te.bias!.grad = torch.tensor(new float[] { 1, last }).to(ScalarType.Float16);
        }
        Grads(1);
        long before = HostRead.Count;
        var norms = GradientClipping.MoveGradsAndNorms([mu, mt], [mu.Masters, mt.Masters], invScale: 0.5);
        Assert.Equal(before + 1, HostRead.Count);   // one transfer for both groups
        Assert.Equal(0.5f, mu.Masters[0].grad!.data<float>()[0]);   // unscaled onto the fp32 masters
        Assert.Equal(Math.Sqrt(8 * 0.25), norms[0], 5);
        Assert.Equal(Math.Sqrt(6 * 0.25), norms[1], 5);

        Grads(float.PositiveInfinity);   // fp16 overflow in the TE's last gradient only
        norms = GradientClipping.MoveGradsAndNorms([mu, mt], [mu.Masters, mt.Masters], invScale: 0.5);
        Assert.True(double.IsFinite(norms[0]));
        Assert.False(double.IsFinite(norms[1]));
        Grads(float.NaN);
        Assert.False(double.IsFinite(GradientClipping.MoveGradsAndNorms([mu, mt], [mu.Masters, mt.Masters], 1)[1]));
        Assert.Equal([0.0], GradientClipping.MoveGradsAndNorms([], [[torch.zeros(2)]], 1));   // no gradients: norm 0
    }

    [Fact]
    public void Grad_clipping_scales_to_max_norm_and_reports_the_norm()
    {
        var a = torch.zeros(2).requires_grad_(true);
        var b = torch.zeros(1).requires_grad_(true);
        a.grad = torch.tensor(new float[] { 3, 0 });
        b.grad = torch.tensor(new float[] { 4 });
        double n = GradientClipping.ClipGradNorm([a, b], 1.0);
        Assert.Equal(5.0, n, 5);
        Assert.Equal(0.6f, a.grad!.data<float>()[0], 5);
        Assert.Equal(0.8f, b.grad!.data<float>()[0], 5);
        Assert.Equal(1.0, GradientClipping.ClipGradNorm([a, b], 0), 5);   // 0 = off, still measured
    }
}
