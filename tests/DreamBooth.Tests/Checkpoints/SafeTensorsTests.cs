using System.Buffers.Binary;
using System.Text;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Checkpoints;

public class SafeTensorsTests
{
    [Fact]
    public void Every_dtype_round_trips_bit_exactly_with_metadata()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("all.safetensors");
        var g = new Generator(7);
        var tensors = new Dictionary<string, Tensor>
        {
            ["f64"] = randn([3, 2], ScalarType.Float64, generator: g),
            ["f32"] = randn([2, 3, 4], generator: g),
            ["f16"] = randn([5], generator: g).to(ScalarType.Float16),
            ["bf16"] = randn([2, 2], generator: g).to(ScalarType.BFloat16),
            ["i64"] = arange(0, 77, dtype: ScalarType.Int64).reshape(1, 77),
            ["i32"] = tensor(new[] { -1, 2, int.MaxValue }),
            ["i16"] = tensor(new short[] { -7, 300 }),
            ["i8"] = tensor(new sbyte[] { -128, 127 }),
            ["u8"] = tensor(new byte[] { 0, 255, 3 }),
            ["bool"] = tensor(new[] { true, false, true }),
            ["scalar"] = tensor(3.5f),
            ["empty"] = zeros([0, 4]),
        };
        var meta = new Dictionary<string, string> { ["format"] = "pt", ["ss_note"] = "héllo \"quoted\"" };
        SafeTensors.Save(path, tensors, meta);

        var bytes = File.ReadAllBytes(path);
        long n = BinaryPrimitives.ReadInt64LittleEndian(bytes);
        Assert.Equal(0, n % 8);
        Assert.Equal((byte)'{', bytes[8]);

        using var f = SafeTensors.Open(path);
        Assert.Equal(meta, f.Metadata);
        Assert.Equal(tensors.Keys.OrderBy(k => k, StringComparer.Ordinal), f.Keys.OrderBy(k => k, StringComparer.Ordinal));
        foreach (var (name, expected) in tensors)
        {
            using var actual = f.Load(name);
            Assert.Equal(expected.dtype, actual.dtype);
            Assert.Equal(expected.shape, actual.shape);
            Assert.True(expected.bytes.SequenceEqual(actual.bytes), name);
        }
        // keys are written sorted by name, so data offsets follow name order
        Assert.Equal(f.Keys.Order(StringComparer.Ordinal).Where(k => f.Info(k).ByteLength > 0), f.Tensors.Where(t => t.ByteLength > 0).Select(t => t.Name));
    }

    [Fact]
    public void LoadAll_filters_and_tensors_outlive_the_file()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("a.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["a.w"] = ones(4), ["b.w"] = full(3, 2f) });
        IReadOnlyDictionary<string, Tensor> loaded;
        using (var f = SafeTensors.Open(path)) loaded = f.LoadAll(k => k.StartsWith("b."));
        Assert.Equal(["b.w"], loaded.Keys);
        Assert.Equal(6f, loaded["b.w"].sum().item<float>());
    }

    // ---- hostile files: each must end in a DreamBoothException naming the problem ----

    static byte[] Raw(string json, int dataBytes, long? declaredLength = null)
    {
        var h = Encoding.UTF8.GetBytes(json);
        var result = new byte[8 + h.Length + dataBytes];
        BinaryPrimitives.WriteInt64LittleEndian(result, declaredLength ?? h.Length);
        h.CopyTo(result, 8);
        return result;
    }

    static string Fails(byte[] content)
    {
        using var dir = TestPaths.NewTempDir("st-bad");
        var path = dir.File("bad.safetensors");
        File.WriteAllBytes(path, content);
        var e = Assert.Throws<DreamBoothException>(() => { using var f = SafeTensors.Open(path); });
        Assert.Contains("bad.safetensors", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }

    [Fact]
    public void Header_length_checks()
    {
        Assert.Contains("header length", Fails(Raw("{}", 0, declaredLength: 1_000)));
        Assert.Contains("limit", Fails(Raw("{}", 0, declaredLength: 200_000_000)));
        Assert.Contains("limit", Fails(Raw("{}", 0, declaredLength: -1)));
        Assert.Contains("8-byte", Fails([1, 2, 3]));
    }

    [Fact]
    public void Json_checks()
    {
        var badUtf8 = Raw("{\"ab\":1}", 0);
        badUtf8[10] = 0xff;
        Assert.Contains("UTF-8", Fails(badUtf8));
        Assert.Contains("not valid JSON", Fails(Raw("{\"a\": {", 0)));
        Assert.Contains("not valid JSON", Fails(Raw("{\"a\":" + new string('[', 200) + new string(']', 200) + "}", 0)));
        Assert.Contains("duplicate", Fails(Raw("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8)));
        Assert.Contains("not a JSON object", Fails(Raw("[1,2]", 0)));
    }

    static string Entry(string name, string dtype, string shape, string offsets) =>
        $"\"{name}\":{{\"dtype\":\"{dtype}\",\"shape\":{shape},\"data_offsets\":{offsets}}}";

    [Fact]
    public void Entry_checks_name_the_tensor()
    {
        Assert.Contains("'w' has unknown or unsupported dtype 'Q4'", Fails(Raw("{" + Entry("w", "Q4", "[1]", "[0,4]") + "}", 4)));
        Assert.Contains("8-bit float", Fails(Raw("{" + Entry("w", "F8_E4M3", "[4]", "[0,4]") + "}", 4)));
        Assert.Contains("'w' shape", Fails(Raw("{" + Entry("w", "F32", "[-1]", "[0,4]") + "}", 4)));
        Assert.Contains("'w' shape", Fails(Raw("{" + Entry("w", "F32", "[1.5]", "[0,4]") + "}", 4)));
        Assert.Contains("not valid JSON", Fails(Raw("{" + Entry("w", "F32", "[NaN]", "[0,4]") + "}", 4)));
        Assert.Contains("'w' is F32 [2]", Fails(Raw("{" + Entry("w", "F32", "[2]", "[0,4]") + "}", 4)));
        // a shape whose byte count overflows 64 bits must not wrap to a small size
        Assert.Contains("'w' is F32", Fails(Raw("{" + Entry("w", "F32", "[4611686018427387904,4]", "[0,0]") + "}", 0)));
        Assert.Contains("run past", Fails(Raw("{" + Entry("w", "F32", "[1]", "[8,12]") + "}", 4)));
        Assert.Contains("lacks", Fails(Raw("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4)));
    }

    [Fact]
    public void Data_region_must_be_covered_exactly()
    {
        Assert.Contains("overlap", Fails(Raw("{" + Entry("a", "F32", "[2]", "[0,8]") + "," + Entry("b", "F32", "[1]", "[4,8]") + "}", 8)));
        Assert.Contains("gap", Fails(Raw("{" + Entry("a", "F32", "[1]", "[0,4]") + "," + Entry("b", "F32", "[1]", "[8,12]") + "}", 12)));
        Assert.Contains("trailing", Fails(Raw("{" + Entry("a", "F32", "[1]", "[0,4]") + "}", 9)));
        Assert.Contains("run past", Fails(Raw("{" + Entry("a", "F32", "[1]", "[0,4]") + "}", 2)));
    }

    [Fact]
    public void Truncated_valid_file_is_refused()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("ok.safetensors");
        SafeTensors.Save(path, new Dictionary<string, Tensor> { ["w"] = ones(16) });
        var bytes = File.ReadAllBytes(path);
        Assert.Contains("run past", Fails(bytes[..^3]));
    }
}
