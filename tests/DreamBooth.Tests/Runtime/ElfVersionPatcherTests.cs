using DreamBooth.Runtime;
using DreamBooth.Tests.Infrastructure;
using TorchSharp;

namespace DreamBooth.Tests.Runtime;

public class ElfVersionPatcherTests
{
    static string RealLibTorchSharp()
    {
        var info = TorchRuntime.Initialize();
        // Find the NuGet/bin original (not the patched copy) next to the test assembly.
        var candidates = new[]
        {
            Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"),
            Path.Combine(AppContext.BaseDirectory, "libLibTorchSharp.so"),
        };
        return candidates.FirstOrDefault(File.Exists) ?? info.LibTorchSharpPath;
    }

    [Fact]
    public void Real_libLibTorchSharp_needs_GLIBCXX_3_4_32_only_for_ios_base_library_init()
    {
        var bytes = File.ReadAllBytes(RealLibTorchSharp());
        var needs = ElfVersionPatcher.ReadVersionNeeds(bytes);
        Assert.Contains(needs, n => n.File == "libstdc++.so.6" && n.Version == "GLIBCXX_3.4.32");
        Assert.Contains(needs, n => n.File == "libc.so.6" && n.Version.StartsWith("GLIBC_2."));
        var symbols = ElfVersionPatcher.SymbolsRequiringVersion(bytes, "GLIBCXX_3.4.32");
        Assert.Equal(["_ZSt21ios_base_library_initv"], symbols);
    }

    [Fact]
    public void Marking_weak_changes_exactly_the_flags_of_that_one_requirement()
    {
        var original = File.ReadAllBytes(RealLibTorchSharp());
        var patched = (byte[])original.Clone();
        // start from an unpatched state in case the bin copy is the patched one
        var before = ElfVersionPatcher.ReadVersionNeeds(patched).Single(n => n.Version == "GLIBCXX_3.4.32");
        Assert.True(ElfVersionPatcher.MarkVersionWeak(patched, "GLIBCXX_3.4.32"));
        var after = ElfVersionPatcher.ReadVersionNeeds(patched);
        var target = after.Single(n => n.Version == "GLIBCXX_3.4.32");
        Assert.Equal(ElfVersionPatcher.VerFlagWeak, target.Flags & ElfVersionPatcher.VerFlagWeak);
        Assert.All(after.Where(n => n.Version != "GLIBCXX_3.4.32"), n => Assert.Equal(0, n.Flags & ElfVersionPatcher.VerFlagWeak));
        int differing = Enumerable.Range(0, original.Length).Count(i => original[i] != patched[i]);
        Assert.True(differing <= 1, $"{differing} bytes changed");
        Assert.Equal(before.FlagsOffset, target.FlagsOffset);
        Assert.False(ElfVersionPatcher.MarkVersionWeak(patched, "GLIBCXX_9.9.9"));
    }

    [Fact]
    public void Garbage_and_truncated_images_are_rejected_with_a_clear_error()
    {
        Assert.Throws<InvalidDataException>(() => ElfVersionPatcher.ReadVersionNeeds(new byte[100]));
        var bytes = File.ReadAllBytes(RealLibTorchSharp());
        var e = Assert.Throws<InvalidDataException>(() => ElfVersionPatcher.ReadVersionNeeds(bytes.AsSpan(0, 4096).ToArray(), "x.so"));
        Assert.StartsWith("x.so:", e.Message);
    }

    [Fact]
    public void Compat_copy_is_used_only_when_the_system_lacks_the_version()
    {
        var info = TorchRuntime.Initialize();
        bool systemHas = LibStdCxxCompat.SystemHasVersion();
        Assert.Equal(!systemHas, info.LibStdCxxCompatCopy);
        if (info.LibStdCxxCompatCopy)
        {
            Assert.StartsWith(Path.Combine(TorchRuntime.CacheDirectory, "native"), info.LibTorchSharpPath);
            var needs = ElfVersionPatcher.ReadVersionNeeds(File.ReadAllBytes(info.LibTorchSharpPath));
            Assert.Equal(ElfVersionPatcher.VerFlagWeak, needs.Single(n => n.Version == "GLIBCXX_3.4.32").Flags & ElfVersionPatcher.VerFlagWeak);
        }
        // and torch really runs
        using var a = torch.ones(2, 3);
        Assert.Equal(6f, a.sum().item<float>());
    }
}
