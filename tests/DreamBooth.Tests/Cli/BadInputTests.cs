using System.Text.Json.Nodes;
using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;

namespace DreamBooth.Tests.Cli;

/// <summary>
/// Bad input is exit 2 with one line naming the option, setting or file and what is expected — found before any work
/// (no model loaded, nothing generated or written) — never exit 1 (internal error).
/// </summary>
public class BadInputTests
{
    static string ToyModel => Path.Combine(TestPaths.DataSamples, "toy", "model");
    static string ToyCheckpoint => Path.Combine(ToyModel, "toy-sd.safetensors");

    static async Task<string> Refused(params string[] args)
    {
        var (code, stdout, err) = await CliTests.Run(args);
        Assert.True(code == 2, $"exit {code} for {string.Join(' ', args)}:\n{stdout}{err}");
        Assert.StartsWith("error: ", err);
        Assert.Single(err.Trim().Split('\n'));
        return err.Trim();
    }

    /// <summary>An existing file where each command writes a folder (or a folder where it writes a file), and a path under a file.</summary>
    [Theory]
    [InlineData("sample", "--output")]
    [InlineData("class-images", "--class-dir")]
    [InlineData("demo", "--output")]
    [InlineData("toy render", "--output")]
    [InlineData("toy subject", "--output")]
    [InlineData("toy class-images", "--output")]
    [InlineData("toy pretrain", "--output")]
    [InlineData("toy export", "--output")]
    [InlineData("toy tokenizer", "--output")]
    [InlineData("xyplot", "--output")]
    public async Task An_output_path_that_cannot_be_written_is_refused_before_any_work(string command, string option)
    {
        using var dir = TestPaths.NewTempDir();
        string file = dir.File("taken");
        File.WriteAllText(file, "someone's file");
        string[] rest = command switch
        {
            // the model path does not exist: had the model been loaded first, the error would name it instead
            "sample" => ["--model", dir.File("no-model"), "--prompt", "x"],
            "class-images" => ["--model", dir.File("no-model"), "--class-prompt", "man", "--count", "3"],
            "toy export" => ["--model", dir.File("no-model")],
            "toy tokenizer" => ["--bpe", dir.File("no-bpe.txt.gz")],
            "xyplot" => ["--checkpoints", ToyCheckpoint, "--prompts", "x"],
            _ => [],
        };
        // xyplot writes a file: a folder there, and a path under a file, are both refused
        string target = command == "xyplot" ? Directory.CreateDirectory(dir.File("grid.png")).FullName : file;
        var err = await Refused([.. command.Split(' '), option, target, .. rest]);
        Assert.Contains($"{option} '{target}'", err);
        Assert.Contains(command == "xyplot" ? "is an existing folder" : "is an existing file (expected a folder)", err);
        err = await Refused([.. command.Split(' '), option, Path.Combine(file, command == "xyplot" ? "grid.png" : "sub"), .. rest]);
        Assert.Contains("is a file, not a folder", err);
        Assert.Equal("someone's file", File.ReadAllText(file));
    }

    [Theory]
    [InlineData("prepare", "--size", "100000x100000", "8 to 8192")]
    [InlineData("prepare", "--size", "4x4", "8 to 8192")]
    [InlineData("sample", "--size", "100000x100000", "--size '100000x100000': width and height must be multiples of 8 from 8 to 8192")]
    [InlineData("sample", "--size", "0x64", "multiples of 8 from 8 to 8192")]
    [InlineData("class-images", "--size", "100000x100000", "--size '100000x100000': width and height must be multiples of 8 from 8 to 8192")]
    [InlineData("xyplot", "--size", "100000x100000", "--size '100000x100000': width and height must be multiples of 8 from 8 to 8192")]
    [InlineData("toy render", "--size", "100000", "8 to 4096")]
    [InlineData("bench prepare", "--size", "100000x100000", "8 to 8192")]
    [InlineData("bench prepare", "--megapixels", "1000000", "at most 120")]
    public async Task Sizes_out_of_range_name_the_accepted_range(string command, string option, string value, string range)
    {
        using var dir = TestPaths.NewTempDir();
        string[] rest = command switch
        {
            "prepare" => ["--input", TestPaths.DataSamples, "--output", dir.File("out")],
            "sample" => ["--model", ToyModel, "--prompt", "x", "--output", dir.File("out")],
            "class-images" => ["--model", ToyModel, "--class-dir", dir.File("out"), "--class-prompt", "man", "--count", "3"],
            "xyplot" => ["--checkpoints", ToyCheckpoint, "--prompts", "x", "--output", dir.File("g.png")],
            "toy render" => ["--output", dir.File("out")],
            _ => [],
        };
        var err = await Refused([.. command.Split(' '), option, value, .. rest]);
        Assert.Contains(range, err);
        Assert.False(Directory.Exists(dir.File("out")), "nothing is written for a refused command");
    }

    static string TinyConfig(TempDir dir, Action<JsonObject> edit)
    {
        Directory.CreateDirectory(dir.File("inst"));
        var json = JsonNode.Parse(new TrainingConfig
        {
            PretrainedModel = dir.File("no-model"),
            OutputDir = dir.File("out"),
            Concepts = [new ConceptConfig { InstanceDir = dir.File("inst"), ClassDir = "", GenerateClassImages = false }],
        }.ToJson())!.AsObject();
        edit(json);
        string path = dir.File("config.json");
        File.WriteAllText(path, json.ToJsonString());
        return path;
    }

    [Fact]
    public async Task Train_output_dir_that_is_a_file_is_a_setting_error()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("out"), "x");
        var err = await Refused("train", "--config", TinyConfig(dir, _ => { }));
        Assert.Contains($"output_dir '{dir.File("out")}' is an existing file (expected a folder)", err);
        Assert.Equal("x", File.ReadAllText(dir.File("out")));
    }

    [Fact]
    public async Task Train_class_dir_that_is_a_file_is_a_setting_error()
    {
        using var dir = TestPaths.NewTempDir();
        File.WriteAllText(dir.File("cls"), "x");
        var err = await Refused("train", "--config", TinyConfig(dir, j => j["concepts"]![0]!["class_dir"] = dir.File("cls")));
        Assert.Contains($"concepts[0].class_dir '{dir.File("cls")}' is an existing file", err);
    }

    [Theory]
    [InlineData("epochs", "1099511627776", "setting 'epochs' = 1099511627776 is out of range (expected an integer ≥ 1 and ≤ 1000000)")]
    [InlineData("epochs", "-1099511627776", "setting 'epochs' = -1099511627776 is out of range (expected an integer ≥ 1 and ≤ 1000000)")]
    [InlineData("save_every_epochs", "1e12", "setting 'save_every_epochs' = 1e12 is out of range (expected an integer from -2147483648 to 2147483647)")]
    [InlineData("epochs", "\"many\"", "setting 'epochs' has the wrong type (expected an integer)")]
    [InlineData("epochs", "1.5", "setting 'epochs' has the wrong type (expected an integer)")]
    public async Task Train_config_says_out_of_range_for_a_number_too_large_and_wrong_type_for_a_wrong_type(string key, string value, string expected)
    {
        using var dir = TestPaths.NewTempDir();
        var err = await Refused("train", "--config", TinyConfig(dir, j => j[key] = JsonNode.Parse(value)));
        Assert.Contains(expected, err);
    }

    [Fact]
    public async Task Train_concept_setting_too_large_names_its_range()
    {
        using var dir = TestPaths.NewTempDir();
        var err = await Refused("train", "--config", TinyConfig(dir, j => j["concepts"]![0]!["class_steps"] = 1L << 40));
        Assert.Contains("setting 'concepts[0].class_steps' = 1099511627776 is out of range (expected an integer ≥ 1 and ≤ 1000)", err);
    }

    static string DbConfig(TempDir dir, Action<JsonObject> edit)
    {
        var json = new JsonObject
        {
            ["model_name"] = "ohwx", ["num_train_epochs"] = 200,
            ["concepts_list"] = new JsonArray(new JsonObject { ["instance_data_dir"] = "/data/ohwx", ["instance_prompt"] = "ohwx man", ["class_data_dir"] = "/data/man" }),
        };
        edit(json);
        string path = dir.File("db_config.json");
        File.WriteAllText(path, json.ToJsonString());
        return path;
    }

    [Theory]
    [InlineData("instance_data_dir", "5", "concepts_list[0].instance_data_dir has the wrong type (expected a string, found a number 5)")]
    [InlineData("class_prompt", "[\"man\"]", "concepts_list[0].class_prompt has the wrong type (expected a string, found a list")]
    [InlineData("class_infer_steps", "\"forty\"", "concepts_list[0].class_infer_steps has the wrong type (expected a number, found a string")]
    [InlineData("num_class_images_per", "1099511627776", "concepts_list[0].num_class_images_per = 1099511627776 is out of range (expected an integer ≥ 0 and ≤ 10000)")]
    public async Task Import_a1111_concept_values_of_the_wrong_type_or_range_are_named(string key, string value, string expected)
    {
        using var dir = TestPaths.NewTempDir();
        var db = DbConfig(dir, j => j["concepts_list"]![0]![key] = JsonNode.Parse(value));
        var err = await Refused("train", "--import-a1111", db, "--config", dir.File("ours.json"));
        Assert.Contains(expected, err);
        Assert.False(File.Exists(dir.File("ours.json")));
    }

    [Theory]
    [InlineData("num_train_epochs", "1099511627776", "'num_train_epochs' = 1099511627776 is out of range (expected an integer ≥ 1 and ≤ 1000000 for epochs)")]
    [InlineData("num_train_epochs", "\"200\"", "'num_train_epochs' has the wrong type (expected an integer, found a string \"200\")")]
    [InlineData("concepts_list", "5", "'concepts_list' has the wrong type (expected a list of concepts, found a number 5)")]
    public async Task Import_a1111_top_level_values_of_the_wrong_type_or_range_are_named(string key, string value, string expected)
    {
        using var dir = TestPaths.NewTempDir();
        var err = await Refused("train", "--import-a1111", DbConfig(dir, j => j[key] = JsonNode.Parse(value)), "--config", dir.File("ours.json"));
        Assert.Contains(expected, err);
    }

    [Fact]
    public async Task Import_a1111_does_not_replace_an_existing_config_without_force()
    {
        using var dir = TestPaths.NewTempDir();
        string db = DbConfig(dir, _ => { });
        string ours = dir.File("ours.json");
        File.WriteAllText(ours, "{ \"my\": \"hand-tuned config\" }");
        var err = await Refused("train", "--import-a1111", db, "--config", ours);
        Assert.Contains($"--config '{ours}' already exists", err);
        Assert.Contains("--force", err);
        Assert.Equal("{ \"my\": \"hand-tuned config\" }", File.ReadAllText(ours));

        var (code, stdout, stderr) = await CliTests.Run("train", "--import-a1111", db, "--config", ours, "--force");
        Assert.True(code == 0, stderr);
        Assert.Contains($"wrote {ours}", stdout);
        Assert.Equal("ohwx", TrainingConfig.FromJson(File.ReadAllText(ours)).Name);

        // a folder where the config should go is refused, not an internal error
        err = await Refused("train", "--import-a1111", db, "--config", dir.Path, "--force");
        Assert.Contains("is an existing folder (expected a file path)", err);
    }
}
