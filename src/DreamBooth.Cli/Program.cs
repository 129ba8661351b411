using DreamBooth.Cli;

return await CliApp.RunAsync(args);
