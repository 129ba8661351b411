using Xunit.Abstractions;

namespace DreamBooth.Tests.Reliability.Fuzz;

/// <summary>
/// Hostile files: every parser that reads a user-supplied file gets its share of
/// <see cref="FuzzHarness.TotalCases"/> seeded mutations (12 000 in CI; DREAMBOOTH_FUZZ_CASES=100000 for the soak).
/// </summary>
public class FuzzTests(ITestOutputHelper output)
{
    public static TheoryData<string> Targets => new(FuzzTargets.All.Select(t => t.Name));

    internal static int CasesFor(FuzzTarget target)
    {
        double total = FuzzTargets.All.Sum(t => t.Weight);
        return (int)Math.Ceiling(FuzzHarness.TotalCases * target.Weight / total);
    }

    [Theory]
    [MemberData(nameof(Targets))]
    public void Mutated_files_end_in_a_clean_error_without_hangs_or_runaway_allocation(string name)
    {
        var target = FuzzTargets.All.Single(t => t.Name == name);
        int cases = CasesFor(target);
        var result = FuzzHarness.Run(target, cases, FuzzHarness.BaseSeed, TimeSpan.FromSeconds(10));
        output.WriteLine(FuzzHarness.Describe(result));
        foreach (var (type, count) in result.ErrorTypes) output.WriteLine($"  {type}: {count}");
        ReliabilityFigures.Record("fuzz", result.Summary);
        Assert.True(result.FailureCount == 0, FuzzHarness.Describe(result));
        Assert.Equal(cases, result.Cases);
        // the mutations must actually reach the error paths, not only produce files that still parse
        Assert.True(result.Rejected > cases / 4, $"only {result.Rejected} of {cases} mutated inputs were rejected: the mutators barely damage {name}");
    }

    /// <summary>Found by the 10⁵ soak (case 1555, seed 20261124): JSON null in a per-block or list member reached Validate as a null reference.</summary>
    [Theory]
    [InlineData("transformer_layers_per_block")]
    [InlineData("attention_head_dim")]
    [InlineData("block_out_channels")]
    [InlineData("down_block_types")]
    public void Null_in_a_unet_list_member_is_a_clean_error_naming_the_key(string key)
    {
        var node = System.Text.Json.Nodes.JsonNode.Parse(DreamBooth.Models.UNet.UNet2DConditionConfig.Tiny.ToJson())!.AsObject();
        node[key] = null;
        var e = Assert.Throws<DreamBoothException>(() => DreamBooth.Models.UNet.UNet2DConditionConfig.Parse(node.ToJsonString(), "unet/config.json").Validate("unet/config.json"));
        Assert.Contains(key, e.Message);
    }

    [Fact]
    public void The_ci_run_covers_at_least_ten_thousand_cases_and_cases_are_reproducible()
    {
        Assert.True(FuzzTargets.All.Sum(CasesFor) >= 10_000);
        var target = FuzzTargets.ClipConfig;
        var seeds = target.Seeds();
        var (a, ma) = FuzzHarness.MakeCase(target, seeds, 17, 5);
        var (b, mb) = FuzzHarness.MakeCase(target, seeds, 17, 5);
        var (c, _) = FuzzHarness.MakeCase(target, seeds, 18, 5);
        Assert.Equal(a, b);
        Assert.Equal(ma, mb);
        Assert.NotEqual(a, c);
    }
}
