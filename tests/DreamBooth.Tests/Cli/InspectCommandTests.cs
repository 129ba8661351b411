using System.Security.Cryptography;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Cli;

public class InspectCommandTests
{
    [Fact]
    public async Task Single_file_reports_components_counts_dtypes_metadata_and_short_hash()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("model.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor>
        {
            ["model.diffusion_model.input_blocks.0.0.weight"] = zeros([8, 4, 3, 3], ScalarType.Float16),
            ["model.diffusion_model.input_blocks.0.0.bias"] = zeros([8], ScalarType.Float16),
            ["first_stage_model.quant_conv.weight"] = zeros([8, 8, 1, 1]),
            ["cond_stage_model.transformer.text_model.embeddings.position_ids"] = zeros([1, 77], ScalarType.Int64),
            ["model_ema.decay"] = zeros([]),
        }, new Dictionary<string, string> { ["ss_training_comment"] = "hello" });
        var (code, stdout, _) = await CliTests.Run("inspect", path);
        Assert.Equal(0, code);
        var sha = Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));
        Assert.Contains($"short hash  {sha[..10]}", stdout);
        Assert.Contains("format      safetensors", stdout);
        Assert.Contains("layout      single-file (LDM / A1111)", stdout);
        Assert.Contains("tensors     5", stdout);
        Assert.Matches(@"unet\s+2 tensors\s+296 parameters\s+F16×2", stdout);
        Assert.Matches(@"vae\s+1 tensors\s+64 parameters\s+F32×1", stdout);
        Assert.Matches(@"text_encoder\s+1 tensors\s+77 parameters\s+I64×1", stdout);
        Assert.Contains("ss_training_comment = hello", stdout);
    }

    [Fact]
    public async Task Ckpt_file_is_inspected_without_executing_it()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("model.ckpt");
        TorchCheckpointWriter.WriteStateDict(path, [("model.diffusion_model.out.2.bias", ones(4)), ("first_stage_model.post_quant_conv.bias", ones(4))]);
        var (code, stdout, _) = await CliTests.Run("inspect", path);
        Assert.Equal(0, code);
        Assert.Contains("pytorch-zip", stdout);
        Assert.Contains("global_step = 470000", stdout);
    }

    [Fact]
    public async Task Diffusers_folder_with_sharded_component()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("model_index.json"), DiffusersFolder.ModelIndexJson());
        Directory.CreateDirectory(dir.File("unet"));
        SafeTensors.Save(dir.File("unet/diffusion_pytorch_model.safetensors"), new Dictionary<string, Tensor> { ["conv_in.weight"] = zeros([8, 4, 3, 3]) });
        Directory.CreateDirectory(dir.File("text_encoder"));
        SafeTensors.Save(dir.File("text_encoder/model-00001-of-00002.safetensors"), new Dictionary<string, Tensor> { ["a"] = zeros([3]) });
        SafeTensors.Save(dir.File("text_encoder/model-00002-of-00002.safetensors"), new Dictionary<string, Tensor> { ["b"] = zeros([2], ScalarType.BFloat16) });
        File.WriteAllText(dir.File("text_encoder/model.safetensors.index.json"),
            """{"metadata":{"total_size":16},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}""");
        var (code, stdout, _) = await CliTests.Run("inspect", dir.Path);
        Assert.Equal(0, code);
        Assert.Contains("format      diffusers folder", stdout);
        Assert.Matches(@"unet\s+1 tensors\s+288 parameters\s+F32×1", stdout);
        Assert.Matches(@"text_encoder\s+2 tensors\s+5 parameters\s+BF16×1, F32×1", stdout);
        Assert.DoesNotContain("short hash", stdout);
    }

    [Theory]
    [InlineData("garbage")]
    [InlineData("missing")]
    [InlineData("folder")]
    public async Task Bad_input_exits_2_with_one_line(string kind)
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("bad.safetensors");
        if (kind == "garbage") File.WriteAllBytes(path, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f, 1, 2, 3]);
        if (kind == "folder") { path = dir.File("empty"); Directory.CreateDirectory(path); }
        var (code, stdout, stderr) = await CliTests.Run("inspect", path);
        Assert.Equal(2, code);
        Assert.Equal("", stdout);
        Assert.Single(stderr.Trim().Split('\n'));
        Assert.StartsWith("error: ", stderr);
    }
}
