using DreamBooth.Cli;

namespace DreamBooth.Tests.Cli;

public class CliTests
{
    internal static async Task<(int Code, string Out, string Err)> Run(params string[] args)
    {
        var o = new StringWriter();
        var e = new StringWriter();
        int code = await CliApp.RunAsync(args, o, e);
        return (code, o.ToString(), e.ToString());
    }

    [Fact]
    public async Task Doctor_reports_the_cpu_backend_loaded()
    {
        var (code, stdout, _) = await Run("doctor");
        Assert.Equal(0, code);
        Assert.Contains("backend         cpu (loaded)", stdout);
        Assert.Contains("TorchSharp      0.107.0", stdout);
        Assert.Contains("libstdc++ compat", stdout);
    }

    [Fact]
    public async Task Unknown_command_is_a_user_error_with_exit_2()
    {
        var (code, _, err) = await Run("frobnicate");
        Assert.Equal(2, code);
        Assert.Contains("frobnicate", err);
    }

    [Fact]
    public async Task Every_command_has_help()
    {
        var root = CliApp.BuildRoot();
        Assert.NotEmpty(root.Subcommands);
        foreach (var c in root.Subcommands)
        {
            var (code, stdout, _) = await Run(c.Name, "--help");
            Assert.Equal(0, code);
            Assert.Contains("Usage:", stdout);
            Assert.False(string.IsNullOrWhiteSpace(c.Description), $"{c.Name} has no description");
        }
    }

    [Fact]
    public void User_errors_map_to_exit_2_and_one_line()
    {
        var err = new StringWriter();
        int code = CliApp.Report(new DreamBoothException("config.json: learning_rate must be > 0"), verbose: false, err);
        Assert.Equal(2, code);
        Assert.Equal("error: config.json: learning_rate must be > 0", err.ToString().Trim());
        var err2 = new StringWriter();
        Assert.Equal(1, CliApp.Report(new InvalidOperationException("boom"), verbose: false, err2));
        Assert.DoesNotContain("   at ", err2.ToString());
    }
}
