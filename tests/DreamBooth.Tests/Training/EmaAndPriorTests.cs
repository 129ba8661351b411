using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

public class EmaAndPriorTests
{
    [Fact]
    public void Ema_follows_d_times_ema_plus_one_minus_d_times_p()
    {
        var p = torch.zeros(3);
        using var ema = new EmaModel([("w", p)], decay: 0.9, warmup: false);
        using (torch.no_grad()) p.fill_(1f);
        ema.Update([("w", p)]);
        Assert.Equal(0.1f, ema.Shadow["w"][0].item<float>(), 6);
        ema.Update([("w", p)]);
        Assert.Equal(0.19f, ema.Shadow["w"][0].item<float>(), 6);
    }

    [Fact]
    public void Ema_warmup_uses_min_decay_one_plus_s_over_ten_plus_s()
    {
        using var ema = new EmaModel([("w", torch.zeros(1))], decay: 0.9999, warmup: true);
        Assert.Equal(0.1, ema.DecayAt(0), 12);
        Assert.Equal(2.0 / 11.0, ema.DecayAt(1), 12);
        Assert.Equal(0.9999, ema.DecayAt(10_000_000), 12);
        var p = torch.ones(1);
        ema.Update([("w", p)]);
        Assert.Equal(0.9f, ema.Shadow["w"].item<float>(), 6);   // 0.1·0 + 0.9·1
        using var plain = new EmaModel([("w", torch.zeros(1))], decay: 0.9999, warmup: false);
        plain.Update([("w", p)]);
        Assert.Equal(1e-4f, plain.Shadow["w"].item<float>(), 8);
    }

    [Fact]
    public void Ema_keeps_fp32_from_bf16_weights_and_restores_state()
    {
        var p = torch.ones(4).to(ScalarType.BFloat16);
        using var ema = new EmaModel([("w", p)], 0.5, false, torch.CPU);
        Assert.Equal(ScalarType.Float32, ema.Shadow["w"].dtype);
        ema.Update([("w", torch.zeros(4))]);
        var state = ema.StateDict();
        using var other = new EmaModel([("w", torch.zeros(4))], 0.5, false);
        other.LoadStateDict(state);
        Assert.True(other.Shadow["w"].BitEqual(ema.Shadow["w"]));
        Assert.Equal(1, other.Updates);
    }

    [Fact]
    public void Prior_loss_weight_is_constant_unless_scaled_then_linear_to_min()
    {
        var c = new TrainingConfig();
        Assert.Equal(0.75, PriorLossSchedule.Weight(c, 0));
        Assert.Equal(0.75, PriorLossSchedule.Weight(c, 150));
        var s = c with { ScalePriorLoss = true };
        Assert.Equal(0.75, PriorLossSchedule.Weight(s, 0), 12);
        Assert.Equal(0.425, PriorLossSchedule.Weight(s, 50), 12);
        Assert.Equal(0.1, PriorLossSchedule.Weight(s, 100), 12);
        Assert.Equal(0.1, PriorLossSchedule.Weight(s, 180), 12);
    }

    [Fact]
    public void State_file_round_trips_bitwise()
    {
        using var dir = Infrastructure.TestPaths.NewTempDir();
        var d = new Dictionary<string, Tensor>
        {
            ["a"] = torch.randn(3, 4),
            ["b"] = torch.randn(5).to(ScalarType.BFloat16),
            ["c"] = torch.tensor(42L),
            ["d"] = torch.tensor(new byte[] { 1, 2, 255 }),
        };
        TensorStateFile.Save(dir.File("s.bin"), d);
        var back = TensorStateFile.Load(dir.File("s.bin"));
        Assert.Equal(d.Keys.Order(), back.Keys.Order());
        foreach (var (k, t) in d)
        {
            Assert.Equal(t.dtype, back[k].dtype);
            Assert.True(t.BitEqual(back[k]), k);
        }
        File.WriteAllBytes(dir.File("bad.bin"), [1, 2, 3]);
        Assert.Throws<DreamBoothException>(() => TensorStateFile.Load(dir.File("bad.bin")));
    }
}
