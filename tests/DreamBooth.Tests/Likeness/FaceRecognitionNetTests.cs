using DreamBooth.Likeness;
using DreamBooth.Models.FaceRecognition;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace DreamBooth.Tests.Likeness;

public class FaceRecognitionNetTests(DescriberFixture fx) : IClassFixture<DescriberFixture>
{
    [Fact]
    public void Descriptors_match_face_api_on_tfjs_to_1e_4()
    {
        var reference = LikenessFixtures.ReferenceDescriptors();
        Assert.True(reference.Count >= 4, $"only {reference.Count} reference descriptors");
        var crops = reference.Keys.Select(k => Image.Load<Rgb24>(Path.Combine(LikenessFixtures.Crops, k))).ToList();
        try
        {
            var ours = fx.Describer.DescribeCrops(crops);
            double worst = 0;
            foreach (var (name, i) in reference.Keys.Select((k, i) => (k, i)))
            {
                Assert.Equal(FaceRecognitionNet.DescriptorSize, ours[i].Length);
                double maxAbs = ours[i].Zip(reference[name], (a, b) => Math.Abs(a - b)).Max();
                worst = Math.Max(worst, maxAbs);
                Assert.True(maxAbs <= 1e-4, $"{name}: max |ours − face-api| = {maxAbs:E2}");
            }
            Console.WriteLine($"parity: worst max-abs difference {worst:E2} over {reference.Count} crops");
        }
        finally
        {
            foreach (var c in crops) c.Dispose();
        }
    }
}

[Collection(DreamBooth.Tests.Models.SerialModelTests.Name)]
public class FaceRecognitionNetResourceTests
{
    [Fact]
    public void Describing_leaves_no_tensor_behind()
    {
        using var net = FaceDescriber.LoadNet();
        using var crop = Image.Load<Rgb24>(Path.Combine(LikenessFixtures.Crops, "faceapi-astronaut.png"));
        FaceDescriber.DescribeCrops(net, [crop]); // warm-up
        long before = DreamBooth.Tests.Models.ModelTestSupport.SettledTensorCount();
        // no collection while describing: a tensor left to the finalizer would otherwise vanish from the count
        Assert.True(GC.TryStartNoGCRegion(32_000_000), "could not suspend the GC");
        long after;
        try
        {
            for (int i = 0; i < 3; i++) FaceDescriber.DescribeCrops(net, [crop, crop]);
            after = TorchSharp.torch.Tensor.TotalCount;
        }
        finally
        {
            if (System.Runtime.GCSettings.LatencyMode == System.Runtime.GCLatencyMode.NoGCRegion) GC.EndNoGCRegion();
        }
        Assert.Equal(before, after);
    }

    [Fact]
    public void Building_the_net_draws_nothing_from_the_global_random_generator()
    {
        // a caller that seeds torch and then builds a model must not see a different stream because a describer was made
        TorchSharp.torch.manual_seed(7);
        using var expected = TorchSharp.torch.rand(4);
        TorchSharp.torch.manual_seed(7);
        using (new FaceRecognitionNet()) { }
        using var actual = TorchSharp.torch.rand(4);
        Assert.True(expected.eq(actual).all().item<bool>(), "constructing FaceRecognitionNet consumed random numbers");
    }
}
