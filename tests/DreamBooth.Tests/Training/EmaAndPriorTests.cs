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

public class FlatEmaTests
{
    static readonly long[][] Shapes = [[3, 5], [7], [2, 3, 4, 4], [1], [33], [17, 3]];

    [Fact]
    public void One_lerp_over_a_flat_span_equals_the_update_per_weight_bit_for_bit()
    {
        // the weights EMA follows as one contiguous buffer (the flattened Lion's) and as separate tensors: the same
        // values, with warm-up (lerp weights 0.9 … below 0.5) and without; every update compared bit for bit
        var gen = new Generator(5);
        var separate = Shapes.Select(s => torch.randn(s, generator: gen)).ToList();
        long total = separate.Sum(t => t.NumberOfElements);
        var buffer = torch.empty(total);
        var views = new List<Tensor>();
        long offset = 0;
        foreach (var t in separate)
        {
            var v = buffer.narrow(0, offset, t.NumberOfElements).view(t.shape);
            v.copy_(t);
            views.Add(v);
            offset += t.NumberOfElements;
        }
        var names = Shapes.Select((_, i) => $"w{i}").ToArray();
        foreach (bool warmup in new[] { true, false })
        {
            using var flat = new EmaModel(names.Zip(views), decay: 0.99, warmup);
            using var perWeight = new EmaModel(names.Zip(separate), decay: 0.99, warmup);
            for (int step = 0; step < 12; step++)
            {
                using (torch.no_grad())
                    for (int i = 0; i < separate.Count; i++)
                    {
                        using var d = torch.randn(separate[i].shape, generator: gen);
                        separate[i].add_(d);
                        views[i].add_(d);
                    }
                flat.Update(names.Zip(views));
                perWeight.Update(names.Zip(separate));
                foreach (var n in names) Assert.True(flat.Shadow[n].BitEqual(perWeight.Shadow[n]), $"warmup {warmup} step {step}: {n}");
            }
            Assert.Equal(12, flat.FlatUpdates);
            Assert.Equal(0, perWeight.FlatUpdates);
        }
    }

    [Fact]
    public void A_false_device_condition_keeps_the_shadow_and_is_not_counted()
    {
        var p = torch.randn(4, 3);
        using var ema = new EmaModel([("w", p)], decay: 0.9, warmup: true);
        using (torch.no_grad()) p.add_(1f);
        ema.Update([("w", p)], torch.ones([], ScalarType.Bool));
        var before = ema.Shadow["w"].clone();
        Assert.Equal(1, ema.Updates);
        using (torch.no_grad()) p.add_(1f);
        ema.Update([("w", p)], torch.zeros([], ScalarType.Bool));
        ema.StepWasSkipped();
        Assert.True(ema.Shadow["w"].BitEqual(before));
        Assert.Equal(1, ema.Updates);   // the warm-up decay of the next update is the one it would have been
    }
}
