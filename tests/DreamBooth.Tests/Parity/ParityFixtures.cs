using System.Globalization;
using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;
using TorchSharp;
using Xunit.Abstractions;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Parity;

/// <summary>
/// One reference file of tests/fixtures/parity, written by tools/parity/generate.py with diffusers' and transformers'
/// own classes (versions in manifest.json; regenerate with tools/parity/regenerate.sh). Tensors load on the CPU and
/// can be moved to any device and dtype, so the same fixtures serve CPU fp32 tests and GPU runs.
/// </summary>
public sealed class ParityFile : IDisposable
{
    readonly SafeTensorsFile _file;

    public static string Directory => Path.Combine(TestPaths.Fixtures, "parity");

    /// <summary>The tiny SD 1.x-architecture diffusers folder every reference was computed with.</summary>
    public static string TinySd => Path.Combine(Directory, "tiny-sd");

    ParityFile(string path) => _file = SafeTensors.Open(path);

    public static ParityFile Open(string name) => new(Path.Combine(Directory, name));

    public IEnumerable<string> Keys => _file.Keys;

    public bool Contains(string name) => _file.Contains(name);

    /// <summary>Tensor <paramref name="name"/>, moved to <paramref name="device"/> and cast to <paramref name="dtype"/> when given.</summary>
    public Tensor Get(string name, Device? device = null, ScalarType? dtype = null)
    {
        var t = _file.Load(name);
        if (device is null && dtype is null) return t;
        using (t) return t.to(dtype ?? t.dtype, device ?? t.device);
    }

    /// <summary>A metadata entry the generator wrote as JSON (configs, hyper-parameters, case lists).</summary>
    public JsonElement Meta(string key)
    {
        if (!_file.Metadata.TryGetValue(key, out var text)) throw new KeyNotFoundException($"{_file.Path}: no metadata '{key}'");
        using var doc = JsonDocument.Parse(text);
        return doc.RootElement.Clone();
    }

    public double MetaDouble(string key) => Meta(key).GetDouble();

    public void Dispose() => _file.Dispose();
}

/// <summary>Differences between our tensor and the reference.</summary>
public readonly record struct ParityDiff(double MaxAbs, double MeanAbs, double ReferenceMaxAbs)
{
    /// <summary>max |ours − reference| / max |reference|.</summary>
    public double Relative => ReferenceMaxAbs == 0 ? MaxAbs : MaxAbs / ReferenceMaxAbs;

    public override string ToString() => string.Create(CultureInfo.InvariantCulture,
        $"max|Δ| {MaxAbs:0.###e+0}, mean|Δ| {MeanAbs:0.###e+0}, max|ref| {ReferenceMaxAbs:0.###e+0}, rel {Relative:0.###e+0}");
}

/// <summary>
/// Compares and reports. Every comparison is logged as <c>PARITY | name | max-abs | relative</c> (the docs table is
/// these lines) and asserted against a bound stated at the call site: relative to the reference's largest magnitude.
/// </summary>
public static class Parity
{
    public static ParityDiff Diff(Tensor ours, Tensor reference)
    {
        Assert.Equal(reference.shape, ours.shape);
        using var scope = NewDisposeScope();
        var a = ours.detach().to(ScalarType.Float64, CPU);
        var b = reference.detach().to(ScalarType.Float64, CPU);
        var d = (a - b).abs();
        Assert.True(a.isfinite().all().item<bool>(), "our tensor has non-finite values");
        return new ParityDiff(d.max().item<double>(), d.mean().item<double>(), b.abs().max().item<double>());
    }

    /// <summary>Asserts max |ours − reference| ≤ <paramref name="maxRelative"/> · max |reference| and logs the figures.</summary>
    public static ParityDiff AssertClose(ITestOutputHelper log, string name, Tensor ours, Tensor reference, double maxRelative)
    {
        var diff = Diff(ours, reference);
        Report(log, name, diff, maxRelative);
        Assert.True(diff.Relative <= maxRelative,
            string.Create(CultureInfo.InvariantCulture, $"{name}: {diff} exceeds the bound rel {maxRelative:0.#e+0}"));
        return diff;
    }

    /// <summary>
    /// Our fp32 result against the float64 reference, bounded by diffusers' own fp32 error:
    /// max |ours − ref64| ≤ max(<paramref name="floor"/>, 8 · max |ref32 − ref64|) (relative; the margin covers other
    /// CPUs' kernel choices). Logs ours against diffusers' fp32 result (the headline figure), ours against float64, and
    /// diffusers' fp32 against float64. The math itself is checked by the float64 comparison.
    /// </summary>
    public static ParityDiff AssertCloseFp32(ITestOutputHelper log, string name, Tensor ours, Tensor reference32, Tensor reference64, double floor = 2e-6)
    {
        var vsDiffusers = Diff(ours, reference32);
        var referenceError = Diff(reference32, reference64).Relative;
        double bound = Math.Max(floor, 8 * referenceError);
        Report(log, name, vsDiffusers, bound);
        var vs64 = Diff(ours, reference64);
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"FP32ERR | {name} | ours vs fp64 rel {vs64.Relative:0.00e+00} | diffusers vs fp64 rel {referenceError:0.00e+00}"));
        Assert.True(vs64.Relative <= bound, string.Create(CultureInfo.InvariantCulture,
            $"{name}: our fp32 error {vs64} exceeds max({floor:0.#e+0}, 8 x diffusers' own fp32 error {referenceError:0.##e+0})"));
        return vsDiffusers;
    }

    public static void Report(ITestOutputHelper log, string name, ParityDiff diff, double bound) =>
        log.WriteLine(string.Create(CultureInfo.InvariantCulture,
            $"PARITY | {name} | {diff.MaxAbs:0.00e+00} | {diff.Relative:0.00e+00} | bound {bound:0.#e+0}"));

    /// <summary>Asserts bit-identical values (same shape and dtype).</summary>
    public static void AssertEqual(string name, Tensor ours, Tensor reference)
    {
        Assert.Equal(reference.shape, ours.shape);
        Assert.True(reference.dtype == ours.dtype, $"{name}: dtype {ours.dtype}, reference {reference.dtype}");
        using var scope = NewDisposeScope();
        var unequal = ours.ne(reference).reshape(-1).nonzero();
        if (unequal.shape[0] == 0) return;
        long i = unequal[0, 0].item<long>();
        var a = ours.reshape(-1)[i].to_type(ScalarType.Float64).item<double>();
        var b = reference.reshape(-1)[i].to_type(ScalarType.Float64).item<double>();
        Assert.Fail($"{name}: {unequal.shape[0]} of {ours.NumberOfElements} values differ; first at flat index {i}: ours {a:R}, reference {b:R}");
    }
}
