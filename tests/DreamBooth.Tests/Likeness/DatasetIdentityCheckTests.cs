using DreamBooth.Likeness;
using DreamBooth.Tests.Infrastructure;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;

namespace DreamBooth.Tests.Likeness;

public class DatasetIdentityCheckTests(DescriberFixture fx) : IClassFixture<DescriberFixture>
{
    [Fact]
    public void Flags_the_other_person_the_near_duplicate_and_the_photo_without_a_face()
    {
        var a = PhotoVariants.Of("astronaut");
        using var camera = Image.Load<Rgb24>(TestPaths.Photo("camera.png"));
        using var coffee = Image.Load<Rgb24>(TestPaths.Photo("coffee.png"));
        try
        {
            var set = new (string, Image<Rgb24>)[]
            {
                ("a1.png", a["astronaut"]), ("a2.png", a["astronaut-crop-mirror-jpeg70"]), ("a3.png", a["astronaut-rot10"]),
                ("camera.png", camera), ("coffee.png", coffee),
            };
            var report = DatasetIdentityCheck.Run(set, fx.Describer);
            Console.WriteLine(report.Summary);
            foreach (var i in report.Issues) Console.WriteLine($"  {i.Kind}: {i.Detail}");
            var other = Assert.Single(report.Of(DatasetIdentityCheck.SomeoneElse));
            Assert.Equal(["camera.png"], other.Photos);
            Assert.Equal(["coffee.png"], Assert.Single(report.Of(DatasetIdentityCheck.NoFace)).Photos);
            Assert.Contains(report.Of(DatasetIdentityCheck.NearDuplicate), i => i.Photos.SequenceEqual(["a1.png", "a3.png"]));
            Assert.DoesNotContain(report.Of(DatasetIdentityCheck.NearDuplicate), i => i.Photos.Contains("camera.png"));
            // the distance matrix: symmetric, null where there is no face
            Assert.Null(report.Distances[4][0]);
            Assert.Equal(report.Distances[0][3], report.Distances[3][0]);
            Assert.True(report.Photos[3].MedianDistance > 0.6);
            Assert.True(report.Photos[0].MedianDistance < 0.6);
            Assert.Contains("1 someone-else", report.Summary);
        }
        finally
        {
            PhotoVariants.Dispose(a.Values);
        }
    }

    [Fact]
    public void Two_people_in_one_photo_and_a_two_photo_set_of_different_people_are_flagged()
    {
        using var astronaut = Image.Load<Rgb24>(TestPaths.Photo("astronaut.png"));
        using var camera = Image.Load<Rgb24>(TestPaths.Photo("camera.png"));
        using var both = new Image<Rgb24>(1024, 512);
        both.Mutate(c => c.DrawImage(astronaut, new Point(0, 0), 1f).DrawImage(camera, new Point(512, 0), 1f));
        var report = DatasetIdentityCheck.Run([("a.png", astronaut), ("b.png", camera), ("both.png", both)], fx.Describer);
        var several = Assert.Single(report.Of(DatasetIdentityCheck.SeveralFaces));
        Assert.Equal(["both.png"], several.Photos);
        Assert.Equal(2, report.Photos[2].Faces);

        var pair = DatasetIdentityCheck.Run([("a.png", astronaut), ("b.png", camera)], fx.Describer);
        Assert.Equal(["a.png", "b.png"], Assert.Single(pair.Of(DatasetIdentityCheck.SomeoneElse)).Photos);
        Assert.Empty(pair.Of(DatasetIdentityCheck.NearDuplicate));
    }

    /// <summary>A photo with a synthetic descriptor: unit vector e_k scaled so that two different k are <paramref name="apart"/> apart.</summary>
    static ReferencePhoto Photo(string name, int k, double apart = 0.9, double jitter = 0, int faces = 1, ulong hash = 0)
    {
        var d = new float[128];
        d[k] = (float)(apart / Math.Sqrt(2));
        d[127] = (float)jitter;
        using var blank = new Image<Rgb24>(32, 32);
        return new ReferencePhoto(name, faces, faces == 0 ? null : d, ContextSignature.From(blank, []), hash, ~hash, faces == 0 ? 1 : 0);
    }

    [Fact]
    public void Analysis_rules_on_synthetic_descriptors()
    {
        // three of one person (0.3 apart via the jitter axis), one other: someone-else, no near-duplicates
        var set = new[] { Photo("a", 0, jitter: 0), Photo("b", 0, jitter: 0.3, hash: 0xFF00), Photo("c", 0, jitter: -0.3, hash: 0xF0F0), Photo("x", 1, hash: 0x0F0F) };
        var r = DatasetIdentityCheck.Of(set);
        Assert.Equal(["x"], Assert.Single(r.Of(DatasetIdentityCheck.SomeoneElse)).Photos);
        Assert.Empty(r.Of(DatasetIdentityCheck.NearDuplicate));
        // three different people: no single outlier, mixed identities
        var mixed = DatasetIdentityCheck.Of([Photo("a", 0, hash: 1), Photo("b", 1, hash: 0xFFFF), Photo("c", 2, hash: 0xFF00FF)]);
        Assert.Empty(mixed.Of(DatasetIdentityCheck.SomeoneElse));
        Assert.Equal(["a", "b", "c"], Assert.Single(mixed.Of(DatasetIdentityCheck.MixedIdentities)).Photos);
        // a near-duplicate by face distance (0.1 < 0.2) and one by the whole-image hash (a faceless photo, mirrored)
        var dup = DatasetIdentityCheck.Of([Photo("a", 0, hash: 0x1234), Photo("a2", 0, jitter: 0.1, hash: 0xABCD0000), Photo("n1", 0, faces: 0, hash: 0x55AA), Photo("n2", 0, faces: 0, hash: ~0x55AAUL)]);
        Assert.Contains(dup.Of(DatasetIdentityCheck.NearDuplicate), i => i.Photos.SequenceEqual(["a", "a2"]) && i.Detail.Contains("faces 0.10 apart"));
        Assert.Contains(dup.Of(DatasetIdentityCheck.NearDuplicate), i => i.Photos.SequenceEqual(["n1", "n2"]) && i.Detail.Contains("images 0 bits apart"));
        Assert.Contains(dup.Of(DatasetIdentityCheck.NoFace), i => i.Detail.Contains("too small to describe"));
    }
}
