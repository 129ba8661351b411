using System.Buffers.Binary;
using System.Diagnostics;
using System.Security.Cryptography;
using System.Text;
using DreamBooth.Data;
using DreamBooth.Tests.Data;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Reliability;

/// <summary>
/// Bad inputs inside a real dataset run, beyond the corrupt-image classes Data/DatasetPreparerTests covers (CMYK,
/// 16-bit, animated, BMP bomb, wrong extension, locked): the shared truncated JPEG, a FIFO named like a photo (opening
/// it would block forever), a symbolic link to /dev/zero (reading never ends), a dangling link, a folder named *.jpg,
/// and a PNG whose header claims 60000×60000 pixels. As root, chmod 000 does not stop reads, so "unreadable" is
/// simulated by the FIFO and the dangling link (and by an exclusive lock in the data tests).
/// </summary>
public class HostileDatasetTests(DetectorFixture fx) : IClassFixture<DetectorFixture>
{
    static readonly PrepareOptions Small = new() { Size = new Bucket(64, 96), MaxParallelism = 2 };

    /// <summary>Hashes of regular files only (the FIFO and links to devices are never opened, here either).</summary>
    static Dictionary<string, string> HashRegular(string dir) =>
        Directory.EnumerateFiles(dir, "*", SearchOption.AllDirectories)
            .Where(f => new FileInfo(f) is { LinkTarget: null, Length: > 0 })
            .ToDictionary(f => f, f => Convert.ToHexStringLower(SHA256.HashData(File.ReadAllBytes(f))));

    /// <summary>A valid PNG header (correct CRCs) claiming 60000×60000 RGB, with a tiny IDAT.</summary>
    internal static byte[] PngBomb()
    {
        var ms = new MemoryStream();
        ms.Write([0x89, (byte)'P', (byte)'N', (byte)'G', 13, 10, 26, 10]);
        void Chunk(string type, byte[] data)
        {
            var len = new byte[4];
            BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
            ms.Write(len);
            var body = Encoding.ASCII.GetBytes(type).Concat(data).ToArray();
            ms.Write(body);
            var crc = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(crc, Crc32(body));
            ms.Write(crc);
        }
        var ihdr = new byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, 60000);
        BinaryPrimitives.WriteInt32BigEndian(ihdr.AsSpan(4), 60000);
        ihdr[8] = 8; ihdr[9] = 2; // 8-bit RGB
        Chunk("IHDR", ihdr);
        Chunk("IDAT", [0x78, 0x9c, 0x63, 0x00, 0x00, 0x00, 0x01, 0x00, 0x01]);
        Chunk("IEND", []);
        return ms.ToArray();
    }

    static uint Crc32(byte[] data)
    {
        uint c = 0xFFFFFFFF;
        foreach (byte b in data)
        {
            c ^= b;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320 ^ (c >> 1) : c >> 1;
        }
        return ~c;
    }

    static void MakeFifo(string path)
    {
        using var p = Process.Start(new ProcessStartInfo("mkfifo", [path]) { RedirectStandardError = true })!;
        p.WaitForExit();
        Assert.Equal(0, p.ExitCode);
    }

    [Fact]
    public async Task Fifo_device_links_folders_and_bombs_are_reported_while_every_good_image_is_prepared()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = tmp.File("raw");
        Directory.CreateDirectory(raw);
        foreach (var good in new[] { "astronaut.png", "camera.png", "rocket.jpg" })
            File.Copy(TestPaths.Photo(good), Path.Combine(raw, good));
        File.Copy(TestPaths.Photo("truncated.jpg"), Path.Combine(raw, "truncated.jpg"));
        File.WriteAllBytes(Path.Combine(raw, "zero.jpg"), []);
        MakeFifo(Path.Combine(raw, "stuck.jpg"));
        File.CreateSymbolicLink(Path.Combine(raw, "endless.png"), "/dev/zero");
        File.CreateSymbolicLink(Path.Combine(raw, "broken.jpg"), Path.Combine(raw, "gone.jpg"));
        Directory.CreateDirectory(Path.Combine(raw, "album.jpg"));
        File.Copy(TestPaths.Photo("coffee.png"), Path.Combine(raw, "album.jpg", "inner.png"));
        File.WriteAllBytes(Path.Combine(raw, "bomb.png"), PngBomb());
        var before = HashRegular(raw);
        var listing = Directory.EnumerateFileSystemEntries(raw, "*", SearchOption.AllDirectories).Order().ToList();

        var run = DatasetPreparer.RunAsync(raw, tmp.File("out"), Small, detector: fx.Detector);
        var finished = await Task.WhenAny(run, Task.Delay(TimeSpan.FromSeconds(90)));
        Assert.True(finished == run, "the preparation run hung (a FIFO or device was opened?)");
        var report = await run;

        var skipped = report.SkippedFiles.ToDictionary(s => s.Source, s => s);
        Assert.Equal(ImageIngest.CodeCorrupt, skipped["truncated.jpg"].Code);
        Assert.Equal(ImageIngest.CodeEmpty, skipped["zero.jpg"].Code);
        Assert.Equal(ImageIngest.CodeEmpty, skipped["stuck.jpg"].Code);
        Assert.Contains("FIFO", skipped["stuck.jpg"].Reason);
        Assert.Equal(ImageIngest.CodeEmpty, skipped["endless.png"].Code);
        Assert.Equal(ImageIngest.CodeUnreadable, skipped["broken.jpg"].Code);
        Assert.Contains("broken symbolic link", skipped["broken.jpg"].Reason);
        Assert.Equal(ImageIngest.CodeTooLarge, skipped["bomb.png"].Code);
        Assert.Equal(6, skipped.Count);
        Assert.All(report.SkippedFiles, s => Assert.False(string.IsNullOrWhiteSpace(s.Reason)));

        // every good image is prepared, including the one inside the folder that is named like a photo
        var items = report.Manifest.Items.ToDictionary(i => i.Source);
        Assert.Equal(new[] { "album.jpg/inner.png", "astronaut.png", "camera.png", "rocket.jpg" }, items.Keys.Order(StringComparer.Ordinal));
        Assert.All(items.Values, i => Assert.True(File.Exists(Path.Combine(report.OutputFolder, i.Output))));

        // nothing in the source folder was modified, deleted or added
        Assert.Equal(before, HashRegular(raw));
        Assert.Equal(listing, Directory.EnumerateFileSystemEntries(raw, "*", SearchOption.AllDirectories).Order().ToList());
    }
}
