using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;

namespace DreamBooth.Tests.Training;

/// <summary>
/// Issue 15 point 2: with prior preservation at batch 1 the A1111 extension steps an instance image, then a class image
/// (2N steps an epoch); "alternate" does that (the default), "joint" is diffusers' one step with both.
/// </summary>
public class PriorSteppingTests
{
    sealed class Sync(Action<TrainingEvent> a) : IProgress<TrainingEvent> { public void Report(TrainingEvent v) => a(v); }

    [Fact]
    public void The_recipe_arithmetic_alternates_two_steps_per_photo_per_epoch()
    {
        var recipe = new TrainingConfig { Concepts = [new ConceptConfig { InstanceDir = "i", ClassDir = "c" }] };
        Assert.Equal("alternate", recipe.PriorStepping);
        var p = StepPlan.For(recipe, 15);
        Assert.Equal((30, 30, 6000, 4500), (p.BatchesPerEpoch, p.StepsPerEpoch, p.TotalSteps, p.TextEncoderSteps));
        Assert.Equal(20, p.SaveEpochs.Count);
        var joint = StepPlan.For(recipe with { PriorStepping = "joint" }, 15);
        Assert.Equal((15, 15, 3000, 2250), (joint.BatchesPerEpoch, joint.StepsPerEpoch, joint.TotalSteps, joint.TextEncoderSteps));
        // without class images there is nothing to alternate
        var noPrior = StepPlan.For(recipe with { Concepts = [new ConceptConfig { InstanceDir = "i" }] }, 15);
        Assert.Equal(3000, noPrior.TotalSteps);
        // accumulation counts batches: 2 alternating batches (instance + class) make one optimizer step
        Assert.Equal(3000, StepPlan.For(recipe with { GradientAccumulationSteps = 2 }, 15).TotalSteps);
        Assert.Contains("prior_stepping = \"both\" is not one of: alternate, joint", (recipe with { PriorStepping = "both" }).Validate(checkFolders: false));
    }

    [Fact]
    public void Alternate_epoch_is_instance_batch_then_its_class_batch()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir);   // 2 instance + 2 class images, batch 1
        var alt = new TrainingData(c).Epoch(0);
        Assert.Equal(4, alt.Count);
        Assert.Equal([false, true, false, true], alt.Select(b => Assert.Single(b.Images).IsClass));
        var joint = new TrainingData(c with { PriorStepping = "joint" }).Epoch(0);
        Assert.Equal(2, joint.Count);
        Assert.All(joint, b => Assert.Equal([false, true], b.Images.Select(i => i.IsClass)));
        // the same pairing either way: the class batch holds the class image joint puts beside its instance image
        Assert.Equal(joint.Select(b => b.Images[1].Path), alt.Where((_, i) => i % 2 == 1).Select(b => b.Images[0].Path));
    }

    [Fact]
    public void Alternate_steps_train_instance_and_class_images_separately_with_the_prior_weight_on_class_steps()
    {
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir) with { Epochs = 2, PriorLossWeight = 0.6 };
        using var m = DreamBoothTrainerTests.TinyModel();
        var steps = new List<TrainingEvent>();
        using (var t = new DreamBoothTrainer(c, m))
        {
            Assert.Equal((4, 8), (t.StepsPerEpoch, t.TotalSteps));
            t.Run(new Sync(e => { if (e.Kind == TrainingEventKind.Step) steps.Add(e); }));
        }
        Assert.Equal(8, steps.Count);
        for (int i = 0; i < steps.Count; i++)
        {
            var e = steps[i];
            if (i % 2 == 0)
            {
                Assert.True(double.IsNaN(e.PriorLoss), $"step {e.Step}: an instance step has no prior loss");
                Assert.Equal(e.InstanceLoss, e.Loss, 6);
            }
            else
            {
                Assert.True(double.IsNaN(e.InstanceLoss), $"step {e.Step}: a class step has no instance loss");
                Assert.Equal(0.6 * e.PriorLoss, e.Loss, 6);   // the class step's loss is prior_loss_weight × its MSE
            }
        }
        // and the log keeps both kinds apart (empty cells where a step has no such part)
        var csv = File.ReadAllLines(Path.Combine(c.OutputDir, "log.csv"));
        Assert.Equal(9, csv.Length);
        Assert.Equal(("", ""), (csv[1].Split(',')[4], csv[2].Split(',')[3]));   // prior_loss of an instance step, instance_loss of a class step
    }

    [Fact]
    public void The_prior_weight_acts_on_alternate_class_steps()
    {
        // Lion's update is the sign of momentum mixing, so a weight on class steps changes the weights from step 3 on
        using var dirA = TestPaths.NewTempDir();
        using var dirB = TestPaths.NewTempDir();
        var a = DreamBoothTrainerTests.TinyConfig(dirA) with { Epochs = 1, PriorStepping = "alternate", PriorLossWeight = 1.0, LearningRate = 1e-3, UseEma = false };
        var b = DreamBoothTrainerTests.TinyConfig(dirB) with { Epochs = 1, PriorStepping = "alternate", PriorLossWeight = 0.05, LearningRate = 1e-3, UseEma = false };
        var wa = Train(a);
        var wb = Train(b);
        Assert.Contains(wa.Keys, k => !wa[k].BitEqual(wb[k]));
    }

    static Dictionary<string, TorchSharp.torch.Tensor> Train(TrainingConfig c)
    {
        using var m = DreamBoothTrainerTests.TinyModel();
        using (var t = new DreamBoothTrainer(c, m)) t.Run();
        return m.UNet.named_parameters().ToDictionary(kv => kv.name, kv => kv.parameter.detach().clone());
    }
}
