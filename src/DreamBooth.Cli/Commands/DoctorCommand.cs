using System.CommandLine;
using System.Runtime.InteropServices;
using DreamBooth.Runtime;

namespace DreamBooth.Cli.Commands;

/// <summary>`dreambooth doctor`: what this machine runs on and where things are looked up.</summary>
public sealed class DoctorCommand : ICliCommand
{
    public Command Build()
    {
        var output = new Option<DirectoryInfo>("--output") { Description = "Folder whose free disk space to report", DefaultValueFactory = _ => new DirectoryInfo(".") };
        var cmd = new Command("doctor", "Report .NET, TorchSharp, the libtorch backend in use, GPUs, disk space and model lookup paths");
        cmd.Options.Add(output);
        cmd.SetAction(parse =>
        {
            var w = parse.InvocationConfiguration.Output;
            w.WriteLine($"dreambooth      {typeof(CliApp).Assembly.GetName().Version}");
            w.WriteLine($".NET            {RuntimeInformation.FrameworkDescription} ({RuntimeInformation.RuntimeIdentifier})");
            w.WriteLine($"OS              {RuntimeInformation.OSDescription}");
            var info = CliApp.Torch();
            w.WriteLine($"TorchSharp      {info.TorchSharpVersion}");
            w.WriteLine($"backend         {info.Backend.ToString().ToLowerInvariant()} (loaded)");
            w.WriteLine($"libtorch        {info.LibTorchDirectory}");
            if (TorchRuntime.PythonTorchVersion(info.LibTorchDirectory) is { } pyTorch)
                w.WriteLine($"  PyTorch       {pyTorch} (TorchSharp {info.TorchSharpVersion}'s LibTorchSharp was built against libtorch {TorchRuntime.BuiltAgainstLibTorch}{(pyTorch.StartsWith(TorchRuntime.BuiltAgainstLibTorch, StringComparison.Ordinal) ? "" : "; another version: see docs/backends.md, symbol check")})");
            w.WriteLine($"LibTorchSharp   {info.LibTorchSharpPath}");
            w.WriteLine($"  from          {info.LibTorchSharpSource}");
            w.WriteLine($"libstdc++ compat {(info.LibStdCxxCompatCopy ? $"in use (system libstdc++ lacks {LibStdCxxCompat.MissingVersion}; patched copy above)" : "not needed")}");
            w.WriteLine($"torch threads   {TorchSharp.torch.get_num_threads()}");
            w.WriteLine($"CUDA            {(info.CudaAvailable ? $"available, {info.CudaDeviceCount} device(s)" : "not available")}");
            foreach (var gpu in Nvml.Devices())
                w.WriteLine($"  GPU {gpu.Index}         {gpu.Name}, {gpu.TotalBytes / (1L << 20)} MiB total, {gpu.UsedBytes / (1L << 20)} MiB used");
            var dir = parse.GetValue(output)!;
            var full = Path.GetFullPath(dir.FullName);
            var probe = full;
            while (!Directory.Exists(probe) && Path.GetDirectoryName(probe) is { } parent) probe = parent;
            var drive = new DriveInfo(probe);
            w.WriteLine($"free disk       {drive.AvailableFreeSpace / (1L << 30)} GiB in {full}");
            w.WriteLine($"HF hub cache    {WorkbenchPaths.HuggingFaceHubCache} (HF_HUB_CACHE / HF_HOME)");
            w.WriteLine($"HF token        {(string.IsNullOrEmpty(Environment.GetEnvironmentVariable("HF_TOKEN")) ? "not set" : "set (HF_TOKEN)")}");
            w.WriteLine($"workbench cache {WorkbenchPaths.Cache} ({TorchRuntime.CacheEnv})");
            w.WriteLine($"external torch  {Environment.GetEnvironmentVariable(TorchRuntime.LibTorchEnv) ?? $"not set ({TorchRuntime.LibTorchEnv})"}");
            w.WriteLine($"LibTorchSharp override {Environment.GetEnvironmentVariable(TorchRuntime.LibTorchSharpEnv) ?? $"not set ({TorchRuntime.LibTorchSharpEnv})"}");
            return 0;
        });
        return cmd;
    }
}
