using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Tests.Models;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Parity;

/// <summary>
/// Single files against diffusers' own converters: scripts/convert_diffusers_to_original_stable_diffusion.py wrote
/// tiny-sd-a1111.safetensors from the diffusers folder, and the generator checked that diffusers' single-file
/// converter (loaders/single_file_utils.py) reads it back, with and without CLIP's position_ids, with zero missing,
/// unexpected, mismatched or unequal tensors (manifest.json, single_file_check).
/// </summary>
public class CheckpointParityTests(TinySdModel fx) : IClassFixture<TinySdModel>
{
    static string A1111File => Path.Combine(ParityFile.Directory, "tiny-sd-a1111.safetensors");

    static ModelLoadOptions TinyOptions => new()
    {
        TextEncoderConfig = CLIPTextConfig.Load(Path.Combine(ParityFile.TinySd, "text_encoder", "config.json")),
        UNetConfig = UNet2DConditionConfig.Load(Path.Combine(ParityFile.TinySd, "unet", "config.json")),
        VaeConfig = AutoencoderKLConfig.Load(Path.Combine(ParityFile.TinySd, "vae", "config.json")),
        TokenizerPath = Path.Combine(ParityFile.TinySd, "tokenizer"),
    };

    static IEnumerable<(string Component, nn.Module Module)> Components(StableDiffusionModel m) =>
        [("text_encoder", m.TextEncoder), ("unet", m.UNet), ("vae", m.Vae)];

    [Fact]
    public void A1111_file_written_by_diffusers_converter_loads_bit_identical_to_the_diffusers_folder()
    {
        using var single = StableDiffusionModel.Load(A1111File, TinyOptions);
        int tensors = 0;
        foreach (var ((component, ours), (_, folder)) in Components(single).Zip(Components(fx.Model)))
        {
            var expected = folder.state_dict();
            var actual = ours.state_dict();
            Assert.Equal(expected.Keys.Order(), actual.Keys.Order());
            foreach (var (key, t) in expected)
            {
                Parity.AssertEqual($"{component} {key}", actual[key], t);
                tensors++;
            }
        }
        Assert.Equal(68 + 684 + 244, tensors);
    }

    [Fact]
    public void Our_single_file_save_is_the_file_diffusers_converter_writes_plus_position_ids()
    {
        using var dir = TestPaths.NewTempDir();
        string ours = dir.File("ours.safetensors");
        fx.Model.SaveSingleFile(ours, ScalarType.BFloat16);   // the fixture's weights are bf16 values, as its file
        using var mine = SafeTensors.Open(ours);
        using var theirs = SafeTensors.Open(A1111File);
        var extra = mine.Keys.Except(theirs.Keys).ToList();
        Assert.Equal([LdmKeyMap.TextPositionIds], extra);
        Assert.Empty(theirs.Keys.Except(mine.Keys));
        using (var scope = NewDisposeScope())
        {
            foreach (var key in theirs.Keys)
            {
                var a = mine.Info(key);
                var b = theirs.Info(key);
                Assert.True(a.DType == b.DType && a.Shape.SequenceEqual(b.Shape), $"{key}: ours {a.DType} [{string.Join(",", a.Shape)}], diffusers' {b.DType} [{string.Join(",", b.Shape)}]");
                Parity.AssertEqual(key, mine.Load(key), theirs.Load(key));
            }
            Parity.AssertEqual("position_ids", mine.Load(LdmKeyMap.TextPositionIds), arange(77, dtype: ScalarType.Int64).unsqueeze(0));
        }

        // what diffusers' single-file converter did with exactly this key set (the generator stops unless all are empty)
        using var manifest = JsonDocument.Parse(File.ReadAllText(Path.Combine(ParityFile.Directory, "manifest.json")));
        var check = manifest.RootElement.GetProperty("single_file_check").GetProperty("with_position_ids");
        foreach (var component in new[] { "unet", "vae", "text_encoder" })
            foreach (var field in new[] { "missing", "unexpected", "mismatched", "not_bit_identical" })
                Assert.Equal(0, check.GetProperty(component).GetProperty(field).GetArrayLength());
        Assert.Equal(0, check.GetProperty("keys_not_read").GetArrayLength());
        // every key of diffusers' file (all of ours but position_ids) became a tensor of diffusers' modules
        Assert.Equal(theirs.Keys.Count(), check.GetProperty("unet").GetProperty("tensors").GetInt32()
            + check.GetProperty("vae").GetProperty("tensors").GetInt32() + check.GetProperty("text_encoder").GetProperty("tensors").GetInt32());
    }
}

/// <summary>Full-size SD 1.5 on the meta device (shapes only) against diffusers' converter's key/shape list.</summary>
[Collection(SerialModelTests.Name)]
public class Sd15KeyListParityTests
{
    [Fact]
    public void Sd15_original_keys_from_diffusers_converter_map_completely_both_ways()
    {
        using var doc = JsonDocument.Parse(File.ReadAllText(Path.Combine(ParityFile.Directory, "sd15-keys.json")));
        var original = doc.RootElement.GetProperty("original").EnumerateObject()
            .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(e => e.GetInt64()).ToArray(), StringComparer.Ordinal);
        Assert.Equal(1130, original.Count);

        var (te, unet, vae) = ModelTestSupport.OnMeta(() => (new CLIPTextModel(CLIPTextConfig.StableDiffusion15),
            new UNet2DConditionModel(UNet2DConditionConfig.StableDiffusion15), new AutoencoderKL(AutoencoderKLConfig.StableDiffusion15)));
        using (te) using (unet) using (vae)
        {
            var ours = new Dictionary<SdComponent, Dictionary<string, long[]>>
            {
                [SdComponent.TextEncoder] = te.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape),
                [SdComponent.UNet] = unet.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape),
                [SdComponent.Vae] = vae.state_dict().ToDictionary(kv => kv.Key, kv => kv.Value.shape),
            };

            // our modules have diffusers' (and transformers') keys and shapes, every one
            var names = new Dictionary<SdComponent, string> { [SdComponent.TextEncoder] = "text_encoder", [SdComponent.UNet] = "unet", [SdComponent.Vae] = "vae" };
            foreach (var (component, keys) in ours)
            {
                var theirs = doc.RootElement.GetProperty("diffusers").GetProperty(names[component]).EnumerateObject()
                    .ToDictionary(p => p.Name, p => p.Value.EnumerateArray().Select(e => e.GetInt64()).ToArray());
                Assert.Equal(theirs.Keys.Order(StringComparer.Ordinal), keys.Keys.Order(StringComparer.Ordinal));
                foreach (var (k, shape) in theirs) Assert.True(shape.SequenceEqual(keys[k]), $"{component} {k}: ours [{string.Join(",", keys[k])}], diffusers [{string.Join(",", shape)}]");
            }

            var map = new LdmKeyMap(LdmBlockLayout.StableDiffusion1);
            // original → ours: every key lands on a distinct weight of ours with the same shape (1x1 conv ⇄ linear)
            var hit = new HashSet<(SdComponent, string)>();
            foreach (var (key, shape) in original)
            {
                var pair = map.ToDiffusers(key) ?? throw new Xunit.Sdk.XunitException($"{key}: not mapped to our modules");
                Assert.True(ours[pair.Component].TryGetValue(pair.DiffusersKey, out var target), $"{key} → {pair.Component} {pair.DiffusersKey}: no such weight");
                var expected = pair.Reshape ? target!.Concat([1L, 1L]).ToArray() : target!;
                Assert.True(expected.SequenceEqual(shape), $"{key}: [{string.Join(",", shape)}], ours [{string.Join(",", expected)}]");
                Assert.True(hit.Add((pair.Component, pair.DiffusersKey)), $"{key}: a second key maps to {pair.DiffusersKey}");
            }
            // ours → original: every weight of ours has its key in diffusers' list
            foreach (var (component, keys) in ours)
                foreach (var k in keys.Keys)
                    Assert.True(original.ContainsKey(map.ToLdm(component, k).LdmKey), $"{component} {k} → {map.ToLdm(component, k).LdmKey}: not in diffusers' list");
            Assert.Equal(original.Count, ours.Values.Sum(d => d.Count));
        }
    }
}
