using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Models;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Cli;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Text;
using TorchSharp;
using TorchSharp.Modules;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Checkpoints;

/// <summary>
/// How a load gets its memory (docs/checkpoints.md, "Loading"): modules built on the meta device, every tensor read
/// straight into its final storage, dtype converted in small chunks. The speed and full-size peak are `bench load`'s.
/// </summary>
public class LoadingTests
{
    static ModelLoadOptions TinyOptions => TinyModel.LoadOptions;

    static StableDiffusionModel Tiny(long seed = 1) => TinyModel.Create(seed);

    static IEnumerable<(string Name, Parameter P)> Parameters(StableDiffusionModel m) =>
        m.TextEncoder.named_parameters().Select(p => ("te." + p.name, p.parameter))
            .Concat(m.UNet.named_parameters().Select(p => ("unet." + p.name, p.parameter)))
            .Concat(m.Vae.named_parameters().Select(p => ("vae." + p.name, p.parameter)));

    static bool SameBits(Tensor a, Tensor b) =>
        a.dtype == b.dtype && a.shape.SequenceEqual(b.shape) && a.contiguous().bytes.SequenceEqual(b.contiguous().bytes);

    [Fact]
    public void Modules_built_on_meta_hold_no_storage_and_other_threads_are_not_affected()
    {
        UNet2DConditionModel unet;
        DeviceType? otherThread = null;
        using (Layers.OnMeta())
        {
            unet = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
            var thread = new Thread(() => otherThread = Layers.Linear(3, 2).weight.device_type);
            thread.Start();
            thread.Join();
        }
        using (unet)
        {
            Assert.All(unet.parameters(), p => Assert.Equal(DeviceType.META, p.device_type));
            Assert.Equal(DeviceType.CPU, otherThread);
            Assert.Equal(DeviceType.CPU, Layers.Linear(3, 2).weight.device_type); // the scope has ended
            using var cpu = new UNet2DConditionModel(UNet2DConditionConfig.Tiny);
            Assert.Equal(cpu.named_parameters().Select(p => (p.name, string.Join(",", p.parameter.shape))),
                unet.named_parameters().Select(p => (p.name, string.Join(",", p.parameter.shape))));
        }
    }

    [Fact]
    public void A_loaded_model_has_no_meta_parameters_and_the_same_parameter_order_as_a_built_one()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(3);
        var file = dir.File("m.safetensors");
        model.SaveSingleFile(file, ScalarType.Float16);
        var folder = dir.File("diffusers");
        model.SaveDiffusers(folder);
        using var fromFile = StableDiffusionModel.Load(file, TinyOptions);
        using var fromFolder = StableDiffusionModel.Load(folder);
        foreach (var loaded in new[] { fromFile, fromFolder })
        {
            // optimizers, EMA and the training state pair parameters by position: the order must not change
            Assert.Equal(Parameters(model).Select(p => p.Name), Parameters(loaded).Select(p => p.Name));
            Assert.All(Parameters(loaded), p =>
            {
                Assert.Equal(DeviceType.CPU, p.P.device_type);
                Assert.Equal(ScalarType.Float32, p.P.dtype);
                Assert.True(p.P.requires_grad, p.Name);
            });
        }
    }

    [Fact]
    public void The_load_dtype_gives_every_weight_in_that_dtype_equal_to_a_cast_of_the_file()
    {
        using var dir = TestPaths.NewTempDir();
        using var model = Tiny(4);
        var fp32 = dir.File("fp32.safetensors");
        model.SaveSingleFile(fp32, ScalarType.Float32);
        var fp16 = dir.File("fp16.safetensors");
        model.SaveSingleFile(fp16, ScalarType.Float16);
        var expected = Parameters(model).ToDictionary(p => p.Name, p => (Tensor)p.P);
        foreach (var (path, dtype) in new[] { (fp32, ScalarType.Float16), (fp32, ScalarType.BFloat16), (fp16, ScalarType.Float16), (fp16, ScalarType.BFloat16) })
        {
            using var loaded = StableDiffusionModel.Load(path, TinyOptions with { Dtype = dtype });
            using var scope = NewDisposeScope();
            foreach (var (name, p) in Parameters(loaded))
            {
                // what torch gives for the same cast (fp16 files: through fp16 first)
                var reference = path == fp16 ? expected[name].to(ScalarType.Float16).to(dtype) : expected[name].to(dtype);
                Assert.True(SameBits(reference, p), $"{Path.GetFileName(path)} → {dtype}: {name}");
            }
        }
        var e = Assert.Throws<DreamBoothException>(() => StableDiffusionModel.Load(fp32, TinyOptions with { Dtype = ScalarType.Float64 }));
        Assert.Contains("dtype", e.Message);
        Assert.Contains("fp16", e.Message);
    }

    [Fact]
    public void ReadInto_converts_in_chunks_bit_for_bit_as_torch_and_reads_each_byte_once()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("edges.safetensors");
        var g = new Generator(11);
        // odd lengths, so chunks end mid-tensor; fp16 subnormals, ±0, ±inf, the largest half, ties to even when narrowing
        var edges = tensor(new float[] { 0f, -0f, 1f, -2.5f, 65504f, 70000f, -1e-7f, 6e-8f, 3e-5f, float.PositiveInfinity, float.NegativeInfinity, 1.00048828125f, 1.00146484375f });
        var tensors = new Dictionary<string, Tensor>
        {
            ["f32"] = cat([edges, randn([1001], generator: g) * 100]),
            ["f16"] = cat([edges, randn([777], generator: g)]).to(ScalarType.Float16),
            ["bf16"] = cat([edges, randn([555], generator: g) * 1e3f]).to(ScalarType.BFloat16),
            ["i64"] = arange(0, 77, dtype: ScalarType.Int64),
        };
        SafeTensors.Save(path, tensors);
        using var f = SafeTensors.Open(path, stagingBytes: 24);
        long expectedBytes = 0;
        foreach (var (name, source) in tensors.Where(kv => kv.Value.is_floating_point()))
            foreach (var to in new[] { ScalarType.Float32, ScalarType.Float16, ScalarType.BFloat16 })
            {
                using var scope = NewDisposeScope();
                var destination = empty(source.shape, to);
                f.ReadInto(name, destination);
                expectedBytes += f.Info(name).ByteLength;
                Assert.True(SameBits(source.to(to), destination), $"{name} → {to}");
            }
        Assert.Equal(expectedBytes, f.BytesRead);
        // a [n] tensor may fill any contiguous destination with n elements (1×1 conv kernels → linear weights)
        using (var square = empty([2, 2], ScalarType.Float32))
        {
            using var src = tensor(new float[] { 1, 2, 3, 4 });
            var four = dir.File("four.safetensors");
            SafeTensors.Save(four, new Dictionary<string, Tensor> { ["x"] = src });
            using var f4 = SafeTensors.Open(four);
            f4.ReadInto("x", square);
            Assert.Equal(new float[] { 1, 2, 3, 4 }, square.data<float>().ToArray());
            using var wrong = empty([3], ScalarType.Float32);
            Assert.Contains("'x' has 4 elements", Assert.Throws<DreamBoothException>(() => f4.ReadInto("x", wrong)).Message);
        }
    }

    [Fact]
    public void A_file_truncated_after_opening_is_a_clean_error()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("t.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a"] = ones(1000), ["b"] = ones(1000) });
        using var f = SafeTensors.Open(path);
        using (var fs = new FileStream(path, FileMode.Open, FileAccess.Write, FileShare.ReadWrite)) fs.SetLength(fs.Length - 100);
        var e = Assert.Throws<DreamBoothException>(() => f.LoadAll());
        Assert.Contains("t.safetensors", e.Message);
        Assert.Contains("truncated", e.Message);
    }

    /// <summary>
    /// The mechanism, measured where it shows: a child process (`bench load --child`) loads a mid-size checkpoint and
    /// reports its peak resident memory. Reading through a memory map (or into a random-initialised model, then
    /// copying) holds the model twice; building on meta and reading straight into each tensor's storage holds it once.
    /// </summary>
    [Fact]
    public async Task A_load_holds_the_model_once_not_model_plus_file()
    {
        using var dir = TestPaths.NewTempDir();
        // ~40 M parameters, nearly all in one [49408, 768] token embedding: 150 MiB in fp32, far above the noise of a
        // process's own growth during a load (JIT, allocator), small enough for CI
        var text = CLIPTextConfig.Tiny with { HiddenSize = 768, NumAttentionHeads = 12, ProjectionDim = 768 };
        var folder = dir.File("mid");
        Directory.CreateDirectory(folder);
        using (var model = StableDiffusionModel.CreateRandom(text, UNet2DConditionConfig.Tiny, AutoencoderKLConfig.Tiny, TinyModel.Tokenizer, seed: 2))
        {
            model.SaveSingleFile(Path.Combine(folder, "mid.safetensors"), ScalarType.Float32);
            model.WriteSidecar(folder);
        }
        var (code, stdout, err) = await CliTests.Run("bench", "load", "--file", Path.Combine(folder, "mid.safetensors"),
            "--load-dtypes", "fp32,fp16", "--repeat", "1");
        Assert.True(code == 0, err);
        var lines = stdout.Split('\n', StringSplitOptions.RemoveEmptyEntries).Select(l => JsonDocument.Parse(l).RootElement.Clone()).ToList();
        Assert.Equal(["fp32", "fp16"], lines.Select(l => l.GetProperty("loaded_dtype").GetString()));
        foreach (var l in lines)
        {
            long model = l.GetProperty("model_mib").GetInt64();
            long grew = l.GetProperty("peak_rss_mib").GetInt64() - l.GetProperty("rss_before_load_mib").GetInt64();
            Assert.True(model > 60, $"model {model} MiB: too small to tell");
            // model + file would be ≥ 2 × model (fp32) or 3 × model (fp16 from fp32); one copy plus overhead is what passes
            Assert.True(grew <= model * 5 / 4 + 64, $"{l.GetProperty("loaded_dtype")}: peak grew {grew} MiB for a {model} MiB model");
        }
    }
}
