using System.Text.Json.Nodes;
using DreamBooth.Checkpoints;
using DreamBooth.Likeness;
using DreamBooth.Models.FaceRecognition;
using DreamBooth.Runtime;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Likeness;

/// <summary>The tfjs weights-manifest reader and the net's loader are strict: every problem is an error naming the tensor.</summary>
public class FaceApiManifestTests
{
    static string Manifest => WorkbenchAssets.Find(FaceDescriber.ManifestAsset);
    static string Bin => Path.Combine(Path.GetDirectoryName(Manifest)!, "face_recognition_model.bin");

    /// <summary>A copy of the manifest and its .bin in a temp folder, edited by <paramref name="editManifest"/> / <paramref name="editBin"/>.</summary>
    static string Copy(TempDir tmp, Action<JsonArray>? editManifest = null, Func<byte[], byte[]>? editBin = null)
    {
        var json = JsonNode.Parse(File.ReadAllText(Manifest))!.AsArray();
        editManifest?.Invoke(json);
        var path = tmp.File("face_recognition_model-weights_manifest.json");
        File.WriteAllText(path, json.ToJsonString());
        var bytes = File.ReadAllBytes(Bin);
        File.WriteAllBytes(tmp.File("face_recognition_model.bin"), editBin?.Invoke(bytes) ?? bytes);
        return path;
    }

    static JsonArray Weights(JsonArray manifest) => manifest[0]!["weights"]!.AsArray();

    static long Bytes(JsonNode w)
    {
        long n = w["shape"]!.AsArray().Aggregate(1L, (a, d) => a * (long)d!);
        return n * (w["quantization"] is null ? 4 : 1);
    }

    [Fact]
    public void The_real_manifest_loads_every_tensor_and_only_known_quantizations()
    {
        var tensors = TfjsWeightsManifest.Load(Manifest);
        Assert.Equal(117, tensors.Count);
        Assert.Equal([7L, 7, 3, 32], tensors["conv32_down/conv/filters"].Shape);
        Assert.Equal("uint8", tensors["fc"].Storage);
        Assert.Equal("float32", tensors["conv64_1/conv1/conv/filters"].Storage);
        using var net = FaceRecognitionNet.FromManifest(Manifest);
        // every parameter of the net is one manifest tensor and vice versa
        Assert.Equal(tensors.Keys.Order(StringComparer.Ordinal), net.named_parameters().Select(p => FaceRecognitionNet.ManifestName(p.name)).Order(StringComparer.Ordinal));
        // dequantization: q × scale + min (the first byte of the bin is the first code of conv32_down/conv/filters)
        var first = JsonNode.Parse(File.ReadAllText(Manifest))![0]!["weights"]![0]!["quantization"]!;
        byte q = File.ReadAllBytes(Bin)[0];
        Assert.Equal((float)(q * (double)first["scale"]! + (double)first["min"]!), tensors["conv32_down/conv/filters"].Values[0]);
    }

    [Fact]
    public void A_missing_tensor_is_an_error_naming_it()
    {
        using var tmp = TestPaths.NewTempDir();
        // drop fc (the last tensor) from the manifest and its bytes from the bin: a consistent file without fc
        long fcBytes = 0;
        var path = Copy(tmp, m => { var w = Weights(m); fcBytes = Bytes(w[^1]!); Assert.Equal("fc", (string)w[^1]!["name"]!); w.RemoveAt(w.Count - 1); },
            b => b[..^(int)(256 * 128)]);
        Assert.Equal(256 * 128, fcBytes);
        var e = Assert.Throws<DreamBoothException>(() => FaceRecognitionNet.FromManifest(path));
        Assert.Contains("tensor 'fc' is missing", e.Message);
    }

    [Fact]
    public void A_renamed_tensor_is_unexpected_and_named()
    {
        using var tmp = TestPaths.NewTempDir();
        var path = Copy(tmp, m => Weights(m)[3]!["name"] = "conv32_down/scale/bias_typo");
        var e = Assert.Throws<DreamBoothException>(() => FaceRecognitionNet.FromManifest(path));
        Assert.Contains("'conv32_down/scale/bias_typo' is not part of the face-recognition net", e.Message);
    }

    [Fact]
    public void A_wrong_shape_is_an_error_naming_the_tensor_and_both_shapes()
    {
        using var tmp = TestPaths.NewTempDir();
        // [3,3,32,32] → [3,3,16,64]: same byte count, so only the shape check can catch it
        var path = Copy(tmp, m => Weights(m)[4]!["shape"] = new JsonArray(3, 3, 16, 64));
        var e = Assert.Throws<DreamBoothException>(() => FaceRecognitionNet.FromManifest(path));
        Assert.Contains("tensor 'conv32_1/conv1/conv/filters' has shape [3, 3, 16, 64], expected [3, 3, 32, 32]", e.Message);
    }

    [Fact]
    public void A_truncated_bin_names_the_tensor_that_runs_past_its_end_and_extra_bytes_are_refused()
    {
        using var tmp = TestPaths.NewTempDir();
        var truncated = Copy(tmp, editBin: b => b[..1000]);
        var e = Assert.Throws<DreamBoothException>(() => TfjsWeightsManifest.Load(truncated));
        // conv32_down/conv/filters takes bytes 0..4704, the bin ends at 1000
        Assert.Contains("tensor 'conv32_down/conv/filters' [7, 7, 3, 32] needs bytes 0..4704 but the weights (face_recognition_model.bin) end at 1000", e.Message);

        using var tmp2 = TestPaths.NewTempDir();
        var longer = Copy(tmp2, editBin: b => [.. b, 1, 2, 3]);
        e = Assert.Throws<DreamBoothException>(() => TfjsWeightsManifest.Load(longer));
        Assert.Contains("3 bytes after the last tensor ('fc') belong to none", e.Message);
    }

    [Fact]
    public void Non_finite_floats_unknown_quantizations_and_unsafe_shard_paths_are_errors()
    {
        using var tmp = TestPaths.NewTempDir();
        // conv64_down/conv1/conv/filters is stored as float32: put a NaN in its first element
        var path = Copy(tmp, editBin: b =>
        {
            var m = JsonNode.Parse(File.ReadAllText(Manifest))!.AsArray();
            long offset = 0;
            foreach (var w in Weights(m)) { if ((string)w!["name"]! == "conv64_down/conv1/conv/filters") break; offset += Bytes(w); }
            BitConverter.GetBytes(float.NaN).CopyTo(b, offset);
            return b;
        });
        var e = Assert.Throws<DreamBoothException>(() => TfjsWeightsManifest.Load(path));
        Assert.Contains("tensor 'conv64_down/conv1/conv/filters' holds a non-finite value (NaN) at element 0", e.Message);

        using var tmp2 = TestPaths.NewTempDir();
        path = Copy(tmp2, m => Weights(m)[0]!["quantization"]!["dtype"] = "int4");
        e = Assert.Throws<DreamBoothException>(() => TfjsWeightsManifest.Load(path));
        Assert.Contains("tensor 'conv32_down/conv/filters' has quantization dtype 'int4'", e.Message);

        using var tmp3 = TestPaths.NewTempDir();
        path = Copy(tmp3, m => m[0]!["paths"] = new JsonArray("../face_recognition_model.bin"));
        e = Assert.Throws<DreamBoothException>(() => TfjsWeightsManifest.Load(path));
        Assert.Contains("must be a file name in the manifest's folder", e.Message);
    }
}
