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

public class FlatLionConditionalStepTests
{
    static readonly long[][] Shapes = [[3, 5], [7], [2, 3, 4, 4], [1], [33]];

    static List<Tensor> Params(long seed)
    {
        var gen = new Generator((ulong)seed);
        return Shapes.Select(s => torch.randn(s, generator: gen).requires_grad_(true)).ToList();
    }

    static void SetGrads(IReadOnlyList<Tensor> ps, int step, bool poison = false)
    {
        var gen = new Generator((ulong)(50 + step));
        using var _ = torch.no_grad();
        for (int i = 0; i < ps.Count; i++)
        {
            var g = torch.randn(ps[i].shape, generator: gen);
            if (poison && i == 2) { g[0, 1, 2, 3].fill_(float.NaN); g[1, 0, 0, 0].fill_(float.PositiveInfinity); }
            ps[i].grad = g;
        }
    }

    [Theory]
    [InlineData(7L)]
    [InlineData(1L << 24)]
    public void A_step_conditional_on_the_device_equals_the_plain_step_when_true_and_keeps_every_bit_when_false(long chunk)
    {
        var a = Params(1);
        var b = Params(1);
        using var plain = new FlatLion([new ParamGroup("unet", a, 1e-3, 0.1)], chunkElements: chunk);
        using var conditional = new FlatLion([new ParamGroup("unet", b, 1e-3, 0.1)], chunkElements: chunk);
        using var yes = torch.ones([], ScalarType.Bool);
        using var no = torch.zeros([], ScalarType.Bool);
        for (int step = 0; step < 5; step++)
        {
            if (step == 2)
            {
                // a NaN and an inf gradient, condition false: parameters and momentum keep every bit, the step is taken back
                var before = b.Select(p => p.detach().clone()).ToList();
                var momentum = conditional.StateDict();
                SetGrads(b, step, poison: true);
                conditional.Step(no);
                conditional.StepWasSkipped();
                conditional.ZeroGrad();
                for (int i = 0; i < b.Count; i++) Assert.True(b[i].BitEqual(before[i]), $"param {i} moved on a skipped step");
                var after = conditional.StateDict();
                Assert.Equal(momentum.Keys.Order(), after.Keys.Order());
                foreach (var (k, t) in momentum) Assert.True(t.BitEqual(after[k]), $"{k} changed on a skipped step");
            }
            SetGrads(a, step);
            SetGrads(b, step);
            plain.Step();
            conditional.Step(yes);
            plain.ZeroGrad();
            conditional.ZeroGrad();
            for (int i = 0; i < a.Count; i++) Assert.True(a[i].BitEqual(b[i]), $"step {step} param {i}");
        }
        var sa = plain.StateDict();
        var sb = conditional.StateDict();
        foreach (var (k, t) in sa) Assert.True(t.BitEqual(sb[k]), k);
        Assert.Equal(5L, sb["unet/0/step"].item<long>());   // the skipped step did not count
    }

    [Fact]
    public void Released_gradients_free_their_buffer_between_steps_and_still_match_lion_on_master_weights()
    {
        manual_seed(11);
        var netA = nn.Linear(6, 5);
        var netB = nn.Linear(6, 5);
        netB.load_state_dict(netA.state_dict());
        using var mwA = new MasterWeights(netA, ScalarType.BFloat16);
        using var mwB = new MasterWeights(netB, ScalarType.BFloat16);
        using var lion = new Lion([new ParamGroup("g", mwA.Masters, 1e-2, 0.01)]);
        using var flat = new FlatLion([new ParamGroup("g", mwB.Masters, 1e-2, 0.01)], releaseGradients: true);
        long values = mwB.Masters.Sum(m => m.NumberOfElements);
        long withoutGrads = flat.StateBytes;
        var x = torch.randn(3, 6).to(ScalarType.BFloat16);
        for (int step = 0; step < 3; step++)
        {
            netA.forward(x).to(ScalarType.Float32).square().mean().backward();
            netB.forward(x).to(ScalarType.Float32).square().mean().backward();
            mwA.MoveGradsToMasters();
            flat.AttachGradients();   // the views the masters' gradients are written into
            Assert.Equal(withoutGrads + 4 * values, flat.StateBytes);
            mwB.MoveGradsToMasters();
            lion.Step();
            flat.Step();
            lion.ZeroGrad();
            flat.ZeroGrad();
            Assert.Equal(withoutGrads, flat.StateBytes);   // no fp32 gradient buffer held through the next forward/backward
            Assert.All(mwB.Masters, m => { using var g = m.grad; Assert.Null(g); });
            mwA.CopyMastersToModel();
            mwB.CopyMastersToModel();
        }
        for (int i = 0; i < mwA.Masters.Count; i++) Assert.True(mwA.Masters[i].BitEqual(mwB.Masters[i]));
    }

    [Fact]
    public void State_of_the_per_tensor_lion_loads_and_a_group_at_mixed_steps_is_refused()
    {
        var a = Params(3);
        var b = Params(3);
        using var lion = new Lion([new ParamGroup("unet", a, 1e-3, 0.1)]);
        for (int step = 0; step < 2; step++) { SetGrads(a, step); lion.Step(); }
        using var flat = new FlatLion([new ParamGroup("unet", b, 1e-3, 0.1)]);
        var state = lion.StateDict();
        flat.LoadStateDict(state);
        var back = flat.StateDict();
        Assert.Equal(state.Keys.Order(), back.Keys.Order());
        foreach (var (k, t) in state) Assert.True(t.BitEqual(back[k]), k);

        state["unet/1/step"] = torch.tensor(1L);
        var e = Assert.Throws<DreamBoothException>(() => flat.LoadStateDict(state));
        Assert.Contains("'unet' has parameters at different steps", e.Message);
    }

    [Fact]
    public void A_state_file_reads_the_momentum_straight_into_the_flat_buffer_and_a_group_it_lacks_stays_zero()
    {
        using var tmp = Infrastructure.TestPaths.NewTempDir();
        var a = Params(5);
        // the state of a run whose text encoder was frozen from the start: no text-encoder momentum in the file
        using var trained = new FlatLion([new ParamGroup("unet", a, 1e-3, 0.1)]);
        for (int step = 0; step < 3; step++) { SetGrads(a, step); trained.Step(); }
        string file = tmp.File("state.bin");
        var saved = trained.StateDict(copy: false);
        TensorStateFile.Save(file, saved);
        foreach (var t in saved.Values) t.Dispose();

        var b = Params(5);
        var teB = Params(6);
        using var resumed = new FlatLion([new ParamGroup("unet", b, 1e-3, 0.1), new ParamGroup("text_encoder", teB, 1e-3, 0.1)]);
        var targets = resumed.StateTargets();
        Assert.Equal(2 * Shapes.Length, targets.Count);
        var read = new HashSet<string>();
        var rest = TensorStateFile.Load(file, name => targets.TryGetValue(name, out var t) && read.Add(name) ? t : null);
        // nothing of the momentum came back as a tensor of its own: only the step counters
        Assert.All(rest.Keys, k => Assert.EndsWith("/step", k));
        Assert.Equal(Shapes.Length, read.Count);
        resumed.LoadStateDict(rest, read);
        foreach (var t in targets.Values.Concat(rest.Values)) t.Dispose();

        var want = trained.StateDict();
        var got = resumed.StateDict();
        Assert.Equal(want.Keys.Order(), got.Keys.Order());
        foreach (var (k, t) in want) Assert.True(t.BitEqual(got[k]), k);
        // the text encoder's momentum, not in the file, stays zero: the same state and bytes as a plain load
        using var plain = new FlatLion([new ParamGroup("unet", Params(5), 1e-3, 0.1), new ParamGroup("text_encoder", Params(6), 1e-3, 0.1)]);
        plain.LoadStateDict(want);
        Assert.Equal(plain.StateBytes, resumed.StateBytes);
        var plainState = plain.StateDict();
        Assert.Equal(plainState.Keys.Order(), got.Keys.Order());
        foreach (var (k, t) in plainState) Assert.True(t.BitEqual(got[k]), k);

        // and, from the same weights (the trainer restores the masters from the same file), the next steps go on bit for bit
        using (torch.no_grad()) for (int i = 0; i < a.Count; i++) b[i].copy_(a[i]);
        for (int step = 3; step < 5; step++) { SetGrads(a, step); SetGrads(b, step); trained.Step(); resumed.Step(); }
        for (int i = 0; i < a.Count; i++) Assert.True(a[i].detach().BitEqual(b[i].detach()), $"param {i}");
    }
}
