using DreamBooth.Data;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit.Abstractions;

namespace DreamBooth.Tests.Reliability;

/// <summary>
/// `dreambooth prepare` killed with SIGKILL at random moments and mid-save, then re-run: the re-run completes,
/// every image is there exactly once, and the outputs equal those of an uninterrupted run byte for byte.
/// </summary>
public class InterruptedPrepareTests(ITestOutputHelper output)
{
    static void MakePhotos(string raw, int count)
    {
        Directory.CreateDirectory(raw);
        var rng = new Random(7);
        for (int i = 0; i < count; i++)
        {
            using var img = new Image<Rgb24>(320 + 16 * i, 240, new Rgb24((byte)rng.Next(256), (byte)rng.Next(256), (byte)rng.Next(256)));
            for (int y = 0; y < img.Height; y += 3)
                for (int x = 0; x < img.Width; x += 3)
                    img[x, y] = new Rgb24((byte)(x * 7 + i), (byte)(y * 5), (byte)rng.Next(256));
            img.SaveAsPng(Path.Combine(raw, $"photo{i:D2}.png"));
        }
    }

    static bool IsOutput(string f) => !Path.GetFileName(f).StartsWith('.'); // leftovers of killed runs are hidden temp files

    [Fact]
    public void Prepare_killed_at_random_moments_and_mid_save_resumes_to_the_same_outputs_with_nothing_lost_or_duplicated()
    {
        using var tmp = TestPaths.NewTempDir();
        string raw = tmp.File("raw");
        MakePhotos(raw, 10);
        var sources = KillHarness.HashTree(raw);
        string[] Args(string outDir) => ["prepare", "--input", raw, "--output", outDir, "--size", "64x96", "--jobs", "1"];

        // the uninterrupted reference run
        string reference = tmp.File("reference");
        var (code, err, elapsed) = KillHarness.Run(TimeSpan.FromMinutes(3), Args(reference));
        Assert.True(code == 0, err);
        var expected = KillHarness.HashTree(reference, IsOutput);   // the folder's marker (hidden) lists what each run wrote
        var refManifest = DatasetManifest.TryLoad(reference)!;
        Assert.Equal(10, refManifest.Items.Count);

        int rounds = KillHarness.Rounds(4);
        var rng = new Random(11);
        string outDir = tmp.File("out");
        int kills = 0;
        for (int round = 0; kills < rounds && round < rounds * 3; round++)
        {
            bool midSave = round % 2 == 1;
            var delay = TimeSpan.FromSeconds((0.2 + 0.7 * rng.NextDouble()) * elapsed.TotalSeconds);
            string how = KillHarness.KillDuring(outDir, midSave, delay, elapsed * 3, Args(outDir));
            output.WriteLine($"round {round}: {how}");
            if (how.StartsWith("killed")) kills++;
            else Directory.Delete(outDir, recursive: true); // it finished first: start over so the next kill lands mid-run
            // whatever is there after a kill is complete: each manifest item's image decodes at the prepared size
            var partial = DatasetManifest.TryLoad(outDir);
            foreach (var item in partial?.Items ?? [])
            {
                using var img = Image.Load<Rgb24>(Path.Combine(outDir, item.Output));
                Assert.Equal((64, 96), (img.Width, img.Height));
            }
        }

        Assert.Equal(rounds, kills);
        (code, err, _) = KillHarness.Run(TimeSpan.FromMinutes(3), Args(outDir));
        Assert.True(code == 0, err);
        var manifest = DatasetManifest.TryLoad(outDir)!;
        Assert.Equal(refManifest.Items.Select(i => (i.Source, i.Output)).Order(), manifest.Items.Select(i => (i.Source, i.Output)).Order());
        Assert.Equal(manifest.Items.Count, manifest.Items.Select(i => i.Source).Distinct().Count()); // nothing duplicated
        var actual = KillHarness.HashTree(outDir, IsOutput);
        foreach (var (file, hash) in expected.Where(kv => kv.Key != DatasetManifest.FileName))
            Assert.True(actual.TryGetValue(file, out var h) && h == hash, $"{file} differs from the uninterrupted run");
        Assert.Equal(expected.Keys.Order(), actual.Keys.Order()); // no extra outputs
        // every output is listed as prepare's in the folder's marker, though runs were killed between files
        var owned = File.ReadAllLines(Path.Combine(outDir, PreparedFolder.MarkerFileName)).ToHashSet();
        Assert.All(actual.Keys, f => Assert.Contains(f.Replace(Path.DirectorySeparatorChar, '/'), owned));
        Assert.Equal(sources, KillHarness.HashTree(raw));          // sources untouched
        int leftovers = Directory.EnumerateFiles(outDir, ".*.tmp", SearchOption.AllDirectories).Count();
        output.WriteLine($"{kills} kills survived, {leftovers} orphaned temp files left by killed runs, 0 bytes lost");
        ReliabilityFigures.Record("kill", $"prepare: {rounds} rounds, {kills} SIGKILLs survived, outputs equal the uninterrupted run, {leftovers} orphaned temp files, 0 bytes lost");
    }
}
