using System.Diagnostics;
using System.Security.Cryptography;
using DreamBooth.Checkpoints;
using DreamBooth.IO;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Reliability;

/// <summary>
/// A save that cannot be written (disk full, read-only output) fails with a clear one-line error naming the file and
/// leaves the previous checkpoint byte-for-byte intact, with no temp file left. Uses a real 1 MiB tmpfs when this
/// sandbox lets root mount one (and remounts it read-only), and always also an injected write failure.
/// </summary>
public class DiskFullTests(ITestOutputHelper output)
{
    /// <summary>A stream that accepts <c>budget</c> bytes, then fails as a full disk does.</summary>
    sealed class FullDiskStream(Stream inner, long budget) : Stream
    {
        long _written;
        public override bool CanRead => false;
        public override bool CanSeek => false;
        public override bool CanWrite => true;
        public override long Length => _written;
        public override long Position { get => _written; set => throw new NotSupportedException(); }
        public override void Flush() => inner.Flush();
        public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
        public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
        public override void SetLength(long value) => throw new NotSupportedException();
        public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));
        public override void Write(ReadOnlySpan<byte> buffer)
        {
            if (_written + buffer.Length > budget) throw new IOException("No space left on device");
            inner.Write(buffer);
            _written += buffer.Length;
        }
    }

    static Dictionary<string, Tensor> Weights(int n, long seed)
    {
        var g = new Generator((ulong)seed);
        return new Dictionary<string, Tensor> { ["unet.conv_in.weight"] = torch.randn([n], generator: g), ["unet.conv_in.bias"] = torch.randn([16], generator: g) };
    }

    static string Hash(string path) => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(path)));

    static void AssertStillLoads(string path, IReadOnlyDictionary<string, Tensor> expected)
    {
        using var f = SafeTensors.Open(path);
        var loaded = f.LoadAll();
        foreach (var (k, v) in expected) Assert.True(loaded[k].eq(v).all().item<bool>(), k);
        foreach (var t in loaded.Values) t.Dispose();
    }

    [Fact]
    public void Injected_write_failure_keeps_the_previous_file_and_names_the_target()
    {
        using var scope = NewDisposeScope();
        using var dir = TestPaths.NewTempDir();
        string path = dir.File("model-000100.safetensors");
        var previous = Weights(1000, 1);
        SafeTensors.Save(path, previous);
        string before = Hash(path);
        var next = Weights(100_000, 2);
        var e = Assert.Throws<DreamBoothException>(() => AtomicFile.Write(path, s =>
        {
            // the real writer's bytes, through a disk that fills up half way
            var full = new FullDiskStream(s, 200_000);
            var header = SafeTensors.BuildHeader(next.OrderBy(kv => kv.Key, StringComparer.Ordinal).Select(kv => (kv.Key, kv.Value.dtype, kv.Value.shape)), null, out _);
            full.Write(BitConverter.GetBytes((ulong)header.Length));
            full.Write(header);
            foreach (var (_, t) in next.OrderBy(kv => kv.Key, StringComparer.Ordinal)) SafeTensors.WriteTensorBytes(full, t.contiguous());
        }));
        Assert.Contains(path, e.Message);
        Assert.Contains("No space left on device", e.Message);
        Assert.DoesNotContain('\n', e.Message);
        Assert.Equal(before, Hash(path));
        AssertStillLoads(path, previous);
        Assert.Equal([path], Directory.GetFiles(dir.Path));
    }

    static bool TryMountTmpfs(string dir, string size)
    {
        try
        {
            using var p = Process.Start(new ProcessStartInfo("mount", ["-t", "tmpfs", "-o", $"size={size}", "tmpfs", dir]) { RedirectStandardError = true, RedirectStandardOutput = true })!;
            p.WaitForExit();
            return p.ExitCode == 0;
        }
        catch (System.ComponentModel.Win32Exception) { return false; }
    }

    static void Mount(params string[] args)
    {
        using var p = Process.Start(new ProcessStartInfo("mount", args) { RedirectStandardError = true })!;
        p.WaitForExit();
        Assert.True(p.ExitCode == 0, "mount " + string.Join(' ', args) + ": " + p.StandardError.ReadToEnd());
    }

    static void Umount(string dir)
    {
        using var p = Process.Start(new ProcessStartInfo("umount", [dir]) { RedirectStandardError = true })!;
        p.WaitForExit();
    }

    [Fact]
    public void Full_and_read_only_tmpfs_fail_saves_clearly_and_keep_the_previous_checkpoint_and_state()
    {
        using var scope = NewDisposeScope();
        using var dir = TestPaths.NewTempDir();
        string mnt = dir.File("mnt");
        Directory.CreateDirectory(mnt);
        if (!TryMountTmpfs(mnt, "1m"))
        {
            output.WriteLine("tmpfs cannot be mounted here (not root or no CAP_SYS_ADMIN): covered by the injected failure test only");
            return;
        }
        try
        {
            string ckpt = Path.Combine(mnt, "model-000100.safetensors");
            string state = Path.Combine(mnt, "state-000100.bin");
            var previous = Weights(20_000, 1); // 80 KB
            SafeTensors.Save(ckpt, previous);
            TensorStateFile.Save(state, previous);
            string ckptHash = Hash(ckpt), stateHash = Hash(state);

            // disk full: 2 MB of weights into the 1 MiB filesystem
            var big = Weights(500_000, 2);
            var e1 = Assert.Throws<DreamBoothException>(() => SafeTensors.Save(ckpt, big));
            output.WriteLine(e1.Message);
            Assert.Contains(ckpt, e1.Message);
            Assert.Contains("space", e1.Message);
            var e2 = Assert.Throws<DreamBoothException>(() => TensorStateFile.Save(state, big));
            Assert.Contains(state, e2.Message);
            Assert.Equal(ckptHash, Hash(ckpt));
            Assert.Equal(stateHash, Hash(state));
            AssertStillLoads(ckpt, previous);
            Assert.Equal(2, Directory.GetFiles(mnt).Length); // no temp file left behind

            // read-only output
            Mount("-o", "remount,ro", mnt);
            var e3 = Assert.Throws<DreamBoothException>(() => SafeTensors.Save(ckpt, Weights(100, 3)));
            output.WriteLine(e3.Message);
            Assert.Contains(ckpt, e3.Message);
            Assert.DoesNotContain('\n', e3.Message);
            Assert.Equal(ckptHash, Hash(ckpt));
            AssertStillLoads(ckpt, previous);
            ReliabilityFigures.Record("disk", "1 MiB tmpfs: disk-full and read-only saves refused with a clear error; previous checkpoint and state intact (0 bytes lost)");
        }
        finally
        {
            Umount(mnt);
        }
    }
}
