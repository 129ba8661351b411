using System.Diagnostics;
using DreamBooth.Pipelines;
using DreamBooth.Schedulers;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit.Abstractions;

namespace DreamBooth.Tests.Pipelines;

public class Txt2ImgPipelineTests(ITestOutputHelper output)
{
    static byte[] Pixels(Image<Rgb24> image)
    {
        var bytes = new byte[image.Width * image.Height * 3];
        image.CopyPixelDataTo(bytes);
        return bytes;
    }

    [Fact]
    public void SameSeedGivesIdenticalImagesAndAnotherSeedDiffers()
    {
        using var pipeline = TinyPipeline.Create();
        var request = TinyPipeline.Request() with { Count = 2, BatchSize = 2 };
        using var a = pipeline.Generate(request);
        using var b = pipeline.Generate(request);
        Assert.Equal(2, a.Images.Count);
        Assert.Equal(42, a.Images[0].Info.Seed);
        Assert.Equal(43, a.Images[1].Info.Seed);
        Assert.Equal(Pixels(a.Images[0].Image), Pixels(b.Images[0].Image));
        Assert.Equal(Pixels(a.Images[1].Image), Pixels(b.Images[1].Image));
        Assert.NotEqual(Pixels(a.Images[0].Image), Pixels(a.Images[1].Image));
        Assert.Equal((16, 24), (a.Images[0].Image.Width, a.Images[0].Image.Height));
    }

    [Fact]
    public void AnImageDependsOnItsSeedNotOnItsBatch()
    {
        using var pipeline = TinyPipeline.Create();
        using var batch = pipeline.Generate(TinyPipeline.Request() with { Count = 2, BatchSize = 2 });
        using var single = pipeline.Generate(TinyPipeline.Request() with { Seed = 43 });
        var x = Pixels(batch.Images[1].Image);
        var y = Pixels(single.Images[0].Image);
        // batched CPU kernels may round differently in the last float bit: allow 1/255
        Assert.True(x.Zip(y).All(p => Math.Abs(p.First - p.Second) <= 1), "seed 43 in a batch of 2 equals seed 43 alone");
    }

    [Fact]
    public void RandomSeedIsReportedAndReproduces()
    {
        using var pipeline = TinyPipeline.Create();
        using var first = pipeline.Generate(TinyPipeline.Request() with { Seed = -1 });
        long seed = first.Images[0].Info.Seed;
        Assert.InRange(seed, 0, GenerationRequest.MaxRandomSeed);
        using var again = pipeline.Generate(TinyPipeline.Request() with { Seed = seed });
        Assert.Equal(Pixels(first.Images[0].Image), Pixels(again.Images[0].Image));
    }

    public static TheoryData<string> Samplers() => [.. SamplerFactory.Names];

    [Theory]
    [MemberData(nameof(Samplers))]
    public void EverySamplerRunsThroughThePipeline(string sampler)
    {
        using var pipeline = TinyPipeline.Create();
        var steps = new List<SamplingProgress>();
        using var result = pipeline.Generate(TinyPipeline.Request(sampler, steps: 3) with { Count = 3, BatchSize = 2 }, new InlineProgress(steps.Add));
        Assert.Equal(3, result.Images.Count);
        Assert.Equal(sampler, result.Images[0].Info.Sampler);
        // 2 batches × 3 steps, numbered per batch, images done counted before each batch
        Assert.Equal(6, steps.Count);
        Assert.Equal([1, 2, 3, 1, 2, 3], steps.Select(s => s.Step));
        Assert.Equal([1, 1, 1, 2, 2, 2], steps.Select(s => s.Batch));
        Assert.All(steps, s => Assert.Equal(2, s.BatchCount));
        Assert.Equal(2, steps[^1].ImagesDone);
        Assert.Equal(3, steps[^1].ImagesTotal);
        Assert.True(steps.Zip(steps.Skip(1)).All(p => p.Second.Elapsed >= p.First.Elapsed));
        // a random model still gives a picture that is not one flat colour
        Assert.True(Pixels(result.Images[0].Image).Distinct().Count() > 1);
    }

    [Fact]
    public void CancellationStopsBetweenSteps()
    {
        using var pipeline = TinyPipeline.Create();
        using var cts = new CancellationTokenSource();
        int seen = 0;
        var progress = new InlineProgress(p => { seen++; if (p.Step == 2) cts.Cancel(); });
        Assert.ThrowsAny<OperationCanceledException>(() => pipeline.Generate(TinyPipeline.Request(steps: 5), progress, cts.Token));
        Assert.Equal(2, seen);
    }

    [Fact]
    public void RepeatedPromptsComeFromTheCacheAndLongPromptsUseMoreChunks()
    {
        using var pipeline = TinyPipeline.Create();
        using (pipeline.Generate(TinyPipeline.Request(steps: 1))) { }
        int hits = pipeline.EmbeddingCacheHits;
        using (pipeline.Generate(TinyPipeline.Request(steps: 1))) { }
        Assert.Equal(hits + 2, pipeline.EmbeddingCacheHits); // prompt and negative prompt
        // a prompt of more than 75 tokens is encoded in two 77-token chunks and the (short) negative is padded to match
        string longPrompt = string.Join(" ", Enumerable.Repeat("red", 100)); // 100 tokens
        Assert.Equal(100, TinyPipeline.Tokenizer.Encode(longPrompt).Count);
        var (cond, uncond) = pipeline.EncodePair(longPrompt, "blurry", 1);
        Assert.Equal(new long[] { 1, 154, 32 }, cond.shape);
        Assert.Equal(new long[] { 1, 154, 32 }, uncond.shape);
        var (shortCond, _) = pipeline.EncodePair("a man", "", 1);
        Assert.Equal(new long[] { 1, 77, 32 }, shortCond.shape);
        // the tail of the long prompt matters: a different second chunk gives different states there
        var (otherCond, _) = pipeline.EncodePair(longPrompt + ", red hat", "blurry", 1);
        Assert.False(TorchSharp.torch.allclose(cond, otherCond));
    }

    [Fact]
    public void ClipSkipChangesTheImageAndIsRecorded()
    {
        using var pipeline = TinyPipeline.Create();
        using var one = pipeline.Generate(TinyPipeline.Request("DDIM", 2));
        using var two = pipeline.Generate(TinyPipeline.Request("DDIM", 2) with { ClipSkip = 2 });
        Assert.Equal(2, two.Images[0].Info.ClipSkip);
        Assert.NotEqual(Pixels(one.Images[0].Image), Pixels(two.Images[0].Image));
    }

    [Theory]
    [InlineData(20, 24, "width")]
    [InlineData(16, 0, "height")]
    public void SizesMustBeMultiplesOf8(int width, int height, string setting)
    {
        using var pipeline = TinyPipeline.Create();
        var e = Assert.Throws<DreamBoothException>(() => pipeline.Generate(TinyPipeline.Request() with { Width = width, Height = height }));
        Assert.Contains(setting, e.Message);
    }

    [Fact]
    public void SavedPngCarriesTheInfotext()
    {
        using var dir = Infrastructure.TestPaths.NewTempDir();
        using var pipeline = TinyPipeline.Create();
        using var result = pipeline.Generate(TinyPipeline.Request("DPM++ 2M Karras", 2));
        string path = dir.File("img.png");
        result.Images[0].SavePng(path);
        var info = PngInfotext.Read(path);
        Assert.NotNull(info);
        Assert.Equal(result.Images[0].Info, info);
        Assert.Equal("tiny-random", info.ModelName);
        Assert.Equal("0123456789", info.ModelHash);
        Assert.Equal("DPM++ 2M Karras", info.Sampler);
    }

    [Theory]
    [InlineData("Euler a")]
    [InlineData("DPM++ 2M Karras")]
    public void GenerationLeavesNoTensorsBehind(string sampler)
    {
        using var pipeline = TinyPipeline.Create();
        var request = TinyPipeline.Request(sampler, 3) with { Count = 2, BatchSize = 2 };
        using (pipeline.Generate(request)) { } // warm-up fills the prompt cache
        long before = TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount;
        using (pipeline.Generate(request)) { }
        using (pipeline.Generate(request with { Seed = 7 })) { }
        Assert.Equal(before, TorchSharp.DisposeScopeManager.Statistics.ThreadTotalLiveCount);
    }

    [Fact]
    public void ModelsStayWhereTheyAreAndKeepTheirTrainingMode()
    {
        TorchSharp.torch.manual_seed(5);
        var te = new DreamBooth.Models.Clip.CLIPTextModel(DreamBooth.Models.Clip.CLIPTextConfig.Tiny);
        var unet = new DreamBooth.Models.UNet.UNet2DConditionModel(DreamBooth.Models.UNet.UNet2DConditionConfig.Tiny);
        var vae = new DreamBooth.Models.Vae.AutoencoderKL(DreamBooth.Models.Vae.AutoencoderKLConfig.Tiny);
        unet.train();
        te.eval();
        using var pipeline = new Txt2ImgPipeline(TinyPipeline.Tokenizer, te, unet, vae, NoiseSchedule.StableDiffusion15, "parts");
        Assert.Equal(TorchSharp.torch.ScalarType.Float32, pipeline.Dtype);
        Assert.Equal(TorchSharp.DeviceType.CPU, pipeline.Device.type);
        using var first = pipeline.Generate(TinyPipeline.Request("DDIM", 2));
        Assert.True(unet.training, "a model being trained is back in train mode after a preview");
        Assert.False(te.training);
        // eval mode during sampling: dropout-free, so the same seed still reproduces with the UNet in train mode
        using var second = pipeline.Generate(TinyPipeline.Request("DDIM", 2));
        Assert.Equal(Pixels(first.Images[0].Image), Pixels(second.Images[0].Image));
    }

    [Fact]
    public void TinyModelSecondsPerStepOnCpu()
    {
        using var pipeline = TinyPipeline.Create();
        using (pipeline.Generate(TinyPipeline.Request(steps: 2))) { } // warm-up
        int threads = TorchSharp.torch.get_num_threads();
        foreach (int n in new[] { 1, threads }.Distinct())
        {
            TorchSharp.torch.set_num_threads(n);
            var clock = Stopwatch.StartNew();
            using var result = pipeline.Generate(TinyPipeline.Request("DPM++ 2M Karras", 5) with { Width = 32, Height = 32 });
            clock.Stop();
            output.WriteLine($"tiny model, 32x32 (latent 16x16), batch 1, CFG on, {n} torch thread(s): {result.SecondsPerStep:F4} s/it over 5 steps ({clock.Elapsed.TotalSeconds:F2} s with decode)");
            Assert.True(result.SecondsPerStep > 0);
        }
        TorchSharp.torch.set_num_threads(threads);
    }

    sealed class InlineProgress(Action<SamplingProgress> report) : IProgress<SamplingProgress>
    {
        public void Report(SamplingProgress value) => report(value);
    }
}
