using System.Buffers.Binary;
using System.IO.Compression;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Checkpoints;

public class TorchCheckpointFileTests
{
    static List<(string, Tensor)> Sample()
    {
        var g = new Generator(3);
        return
        [
            ("model.diffusion_model.out.2.weight", randn([4, 3, 3, 3], generator: g)),
            ("model.diffusion_model.out.2.bias", randn([4], generator: g).to(ScalarType.Float16)),
            ("cond_stage_model.transformer.text_model.embeddings.position_ids", arange(0, 77, dtype: ScalarType.Int64).reshape(1, 77)),
            ("first_stage_model.quant_conv.bias", randn([8], generator: g).to(ScalarType.BFloat16)),
        ];
    }

    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void Loads_a_state_dict_built_byte_by_byte(bool wrapped)
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("model.ckpt");
        var sample = Sample();
        TorchCheckpointWriter.WriteStateDict(path, sample, wrapped);
        using var f = TensorFile.Open(path);
        Assert.IsType<TorchCheckpointFile>(f);
        Assert.Equal(sample.Select(s => s.Item1).Order(), f.Keys.Order());
        foreach (var (name, expected) in sample)
        {
            var (type, shape) = f.Describe(name);
            Assert.Equal(expected.dtype, type);
            Assert.Equal(expected.shape, shape);
            using var actual = f.Load(name);
            Assert.True(expected.bytes.SequenceEqual(actual.bytes), name);
        }
        if (wrapped) Assert.Equal("470000", ((TorchCheckpointFile)f).Extras["global_step"]);
    }

    [Fact]
    public void Views_and_shared_storages_are_rebuilt_with_offset_and_stride()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("views.ckpt");
        var storage = arange(0, 12, dtype: ScalarType.Float32);
        var p = new PickleWriter().Proto().Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark();
        void View(string name, long offset, long[] size, long[] stride)
        {
            p.Str(name).Global("torch._utils", "_rebuild_tensor_v2").Mark()
             .Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(12).Tuple().PersId()
             .Int(offset).IntTuple(size).IntTuple(stride).False().Global("collections", "OrderedDict").EmptyTuple().Reduce()
             .Tuple().Reduce();
        }
        View("transposed", 0, [3, 4], [1, 3]);
        View("tail", 6, [2, 3], [3, 1]);
        p.SetItems().Stop();
        TorchCheckpointWriter.Write(path, p.ToArray(), [storage]);
        using var f = TorchCheckpointFile.Open(path);
        using var t = f.Load("transposed");
        Assert.Equal(storage.reshape(4, 3).t().contiguous().data<float>().ToArray(), t.data<float>().ToArray());
        using var tail = f.Load("tail");
        Assert.Equal(new float[] { 6, 7, 8, 9, 10, 11 }, tail.data<float>().ToArray());
    }

    [Fact]
    public void Compressed_pickle_is_inflated()
    {
        using var dir = TestPaths.NewTempDir();
        var path = dir.File("deflated.ckpt");
        var sample = Sample();
        TorchCheckpointWriter.Write(path, TorchCheckpointWriter.StateDictPickle(sample, true), sample.Select(s => s.Item2).ToList(), compressPickle: true);
        using var f = TorchCheckpointFile.Open(path);
        Assert.Equal(4, f.Keys.Count());
    }

    static string Refused(byte[] pickle, IReadOnlyList<Tensor>? storages = null)
    {
        using var dir = TestPaths.NewTempDir("ckpt-bad");
        var path = dir.File("evil.ckpt");
        TorchCheckpointWriter.Write(path, pickle, storages ?? []);
        var e = Assert.Throws<DreamBoothException>(() => { using var f = TensorFile.Open(path); });
        Assert.Contains("evil.ckpt", e.Message);
        return e.Message;
    }

    [Fact]
    public void Pickle_referencing_os_system_is_refused_and_nothing_runs()
    {
        using var dir = TestPaths.NewTempDir();
        var marker = dir.File("pwned");
        // The classic payload: os.system("touch <marker>") via GLOBAL + REDUCE, inside an otherwise valid checkpoint.
        var p = new PickleWriter().Proto().Global("os", "system").Str($"touch {marker}").Op(0x85).Reduce().Stop();
        var msg = Refused(p.ToArray());
        Assert.Contains("refusing to load", msg);
        Assert.Contains("os.system", msg);
        Assert.Contains("only tensor rebuild is allowed", msg);
        Assert.False(File.Exists(marker));

        Assert.Contains("builtins.eval", Refused(new PickleWriter().Proto().Str("builtins").Str("eval").Op(0x93).Stop().ToArray()));
        Assert.Contains("posix.system", Refused(new PickleWriter().Proto().Global("posix", "system").Stop().ToArray()));
    }

    [Fact]
    public void Object_construction_and_malformed_pickles_are_refused()
    {
        Assert.Contains("constructs objects", Refused(new PickleWriter().Proto().Global("collections", "OrderedDict").EmptyTuple().Op(0x81).Stop().ToArray()));
        Assert.Contains("unsupported opcode", Refused(new PickleWriter().Proto().Op((byte)'I').Stop().ToArray()));
        Assert.Contains("without STOP", Refused(new PickleWriter().Proto().EmptyDict().ToArray()));
        Assert.Contains("underflow", Refused(new PickleWriter().Proto().Op((byte)'s').Stop().ToArray()));
        Assert.Contains("memo key", Refused(new PickleWriter().Proto().BinGet(9).Stop().ToArray()));
        Assert.Contains("not a state dict", Refused(new PickleWriter().Proto().Int(5).Stop().ToArray()));
        // a tensor view reaching past its storage
        var p = new PickleWriter().Proto().EmptyDict().Str("w").Global("torch._utils", "_rebuild_tensor_v2").Mark()
            .Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(4).Tuple().PersId()
            .Int(2).IntTuple([4]).IntTuple([1]).False().Global("collections", "OrderedDict").EmptyTuple().Reduce().Tuple().Reduce().SetItem().Stop();
        Assert.Contains("reaches element", Refused(p.ToArray(), [ones(4)]));
        // a storage record whose size disagrees with the pickle
        var q = new PickleWriter().Proto().EmptyDict().Str("w").Global("torch._utils", "_rebuild_tensor_v2").Mark()
            .Mark().Str("storage").Global("torch", "FloatStorage").Str("0").Str("cpu").Int(8).Tuple().PersId()
            .Int(0).IntTuple([8]).IntTuple([1]).False().Global("collections", "OrderedDict").EmptyTuple().Reduce().Tuple().Reduce().SetItem().Stop();
        Assert.Contains("expected 32", Refused(q.ToArray(), [ones(4)]));
    }

    [Fact]
    public void Zip_bombs_and_broken_archives_end_in_clean_errors()
    {
        using var dir = TestPaths.NewTempDir();
        var sample = Sample();
        var good = dir.File("good.ckpt");
        TorchCheckpointWriter.Write(good, new byte[100_000].Select(_ => (byte)'N').Prepend((byte)0x80).ToArray(), [], compressPickle: true);
        var bytes = File.ReadAllBytes(good);
        // Patch the central directory's uncompressed size of data.pkl to 4 GB - 2: a bomb claim.
        int cd = FindCentral(bytes, "archive/data.pkl");
        var bomb = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(bomb.AsSpan(cd + 24), 0xFFFFFFFE);
        Assert.Contains("zip bomb", Fails(dir, bomb));
        // Under the absolute limit but an impossible expansion ratio for its compressed size.
        var ratio = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(ratio.AsSpan(cd + 24), 50_000_000);
        Assert.Contains("claims 50000000 bytes", Fails(dir, ratio));
        // Claim fewer bytes than the stream inflates to.
        var lie = (byte[])bytes.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(lie.AsSpan(cd + 24), 1000);
        Assert.Contains("size other than the declared", Fails(dir, lie));
        // Truncations anywhere: always a DreamBoothException.
        var real = dir.File("real.ckpt");
        TorchCheckpointWriter.WriteStateDict(real, sample);
        var full = File.ReadAllBytes(real);
        foreach (int cut in new[] { 10, full.Length / 2, full.Length - 30, full.Length - 1 })
            Fails(dir, full[..cut]);
        // Local header offset pointing outside the file.
        var badOffset = (byte[])full.Clone();
        BinaryPrimitives.WriteUInt32LittleEndian(badOffset.AsSpan(FindCentral(full, "archive/data.pkl") + 42), 0x7FFFFFF0);
        Assert.Contains("local header", Fails(dir, badOffset));
    }

    static int FindCentral(byte[] zip, string name)
    {
        var n = System.Text.Encoding.UTF8.GetBytes(name);
        for (int i = zip.Length - 46; i >= 0; i--)
            if (BinaryPrimitives.ReadUInt32LittleEndian(zip.AsSpan(i)) == 0x02014b50 && zip.AsSpan(i + 46, Math.Min(n.Length, zip.Length - i - 46)).SequenceEqual(n))
                return i;
        throw new InvalidOperationException("central entry not found");
    }

    static string Fails(TempDir dir, byte[] content)
    {
        var path = dir.File($"broken-{Guid.NewGuid():N}.ckpt");
        File.WriteAllBytes(path, content);
        var e = Assert.Throws<DreamBoothException>(() => { using var f = TensorFile.Open(path); });
        Assert.DoesNotContain('\n', e.Message);
        return e.Message;
    }
}
