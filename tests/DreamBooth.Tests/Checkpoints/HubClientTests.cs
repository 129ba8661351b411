using System.Collections.Concurrent;
using System.Net;
using System.Net.Sockets;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using DreamBooth.Checkpoints;
using DreamBooth.Tests.Infrastructure;

namespace DreamBooth.Tests.Checkpoints;

/// <summary>A tiny stand-in for the Hub on loopback: repo info, resolve with ETag / X-Repo-Commit, Range, LFS-style CDN redirect.</summary>
sealed class FakeHub : IDisposable
{
    readonly HttpListener _listener;
    readonly Task _loop;
    public string Endpoint { get; }
    public const string Commit = "0123456789abcdef0123456789abcdef01234567";
    public Dictionary<string, byte[]> Files { get; } = new();
    public ConcurrentQueue<string> Log { get; } = new();
    /// <summary>When set, the next full GET of a file sends only this many bytes and drops the connection.</summary>
    public int? CutAfter { get; set; }
    public string? RequiredToken { get; set; }
    public bool LfsRedirect { get; set; } = true;

    public FakeHub()
    {
        (_listener, Endpoint) = StartOnFreePort();
        _loop = Task.Run(Loop);
    }

    /// <summary>
    /// HttpListener cannot bind port 0, so a free port is asked of the OS and then bound; another process (a
    /// parallel test run) may take it in between, so a bind that fails is retried on a new port.
    /// </summary>
    internal static (HttpListener Listener, string Endpoint) StartOnFreePort(Func<int>? pickPort = null, int attempts = 20)
    {
        pickPort ??= FreePort;
        for (int i = 1; ; i++)
        {
            int port = pickPort();
            var endpoint = $"http://127.0.0.1:{port}";
            var listener = new HttpListener();
            listener.Prefixes.Add(endpoint + "/");
            try
            {
                listener.Start();
                return (listener, endpoint);
            }
            catch (HttpListenerException) when (i < attempts)
            {
                listener.Close();
            }
        }
    }

    internal static int FreePort()
    {
        var probe = new TcpListener(IPAddress.Loopback, 0);
        probe.Start();
        int port = ((IPEndPoint)probe.LocalEndpoint).Port;
        probe.Stop();
        return port;
    }

    static string Sha(byte[] b) => Convert.ToHexStringLower(SHA256.HashData(b));

    async Task Loop()
    {
        while (_listener.IsListening)
        {
            HttpListenerContext ctx;
            try { ctx = await _listener.GetContextAsync(); } catch { return; }
            try { Handle(ctx); } catch { try { ctx.Response.Abort(); } catch { } }
        }
    }

    void Handle(HttpListenerContext ctx)
    {
        var req = ctx.Request; var res = ctx.Response;
        var path = Uri.UnescapeDataString(req.Url!.AbsolutePath);
        Log.Enqueue($"{req.HttpMethod} {path} range={req.Headers["Range"]} auth={req.Headers["Authorization"]}");
        if (RequiredToken is not null && path.Contains("/resolve/") && req.Headers["Authorization"] != $"Bearer {RequiredToken}")
        {
            res.StatusCode = 401; res.Close(); return;
        }
        if (path.StartsWith("/api/models/"))
        {
            var body = JsonSerializer.SerializeToUtf8Bytes(new { sha = Commit, siblings = Files.Keys.Select(k => new { rfilename = k }) });
            res.ContentType = "application/json";
            res.OutputStream.Write(body);
            res.Close();
            return;
        }
        if (path.StartsWith("/cdn/"))
        {
            var sha = path["/cdn/".Length..];
            var data = Files.Values.First(v => Sha(v) == sha);
            Serve(ctx, data);
            return;
        }
        // /{owner}/{name}/resolve/{rev}/{file}
        var parts = path.Trim('/').Split('/', 5);
        if (parts.Length == 5 && parts[2] == "resolve" && Files.TryGetValue(parts[4], out var content))
        {
            res.Headers["X-Repo-Commit"] = Commit;
            if (LfsRedirect)
            {
                res.Headers["X-Linked-Etag"] = $"\"{Sha(content)}\"";
                res.Headers["X-Linked-Size"] = content.Length.ToString();
                res.Redirect($"{Endpoint}/cdn/{Sha(content)}");
                res.StatusCode = 302;
                res.Close();
                return;
            }
            res.Headers["ETag"] = $"\"{Sha(content)}\"";
            Serve(ctx, content);
            return;
        }
        res.StatusCode = 404;
        res.Close();
    }

    void Serve(HttpListenerContext ctx, byte[] data)
    {
        var req = ctx.Request; var res = ctx.Response;
        long from = 0;
        if (req.Headers["Range"] is { } range && range.StartsWith("bytes="))
        {
            from = long.Parse(range["bytes=".Length..].TrimEnd('-'));
            res.StatusCode = 206;
            res.Headers["Content-Range"] = $"bytes {from}-{data.Length - 1}/{data.Length}";
        }
        res.ContentLength64 = data.Length - from;
        if (req.HttpMethod == "HEAD") { res.Close(); return; }
        if (from == 0 && CutAfter is int cut)
        {
            CutAfter = null;
            res.OutputStream.Write(data, 0, cut);
            res.OutputStream.Flush();
            res.Abort(); // connection dropped mid-transfer
            return;
        }
        res.OutputStream.Write(data, (int)from, (int)(data.Length - from));
        res.Close();
    }

    bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _listener.Stop();
        _listener.Close();
        try { _loop.Wait(2000); } catch { }
    }
}

public class HubClientTests
{
    static byte[] Payload(int n, int seed) { var b = new byte[n]; new Random(seed).NextBytes(b); return b; }

    [Fact]
    public void The_fake_hub_takes_another_port_when_the_one_it_picked_is_taken_meanwhile()
    {
        // the race a parallel test run hits: the port probed free is bound by someone else before the listener starts
        var (taken, takenEndpoint) = FakeHub.StartOnFreePort();
        using var _ = taken;
        int takenPort = new Uri(takenEndpoint).Port, calls = 0;
        var (listener, endpoint) = FakeHub.StartOnFreePort(() => ++calls == 1 ? takenPort : FakeHub.FreePort());
        using (listener)
        {
            Assert.Equal(2, calls);
            Assert.NotEqual(takenPort, new Uri(endpoint).Port);
            Assert.True(listener.IsListening);
        }
    }

    [Fact]
    public async Task Downloads_into_the_huggingface_cache_layout_and_reuses_it()
    {
        using var hub = new FakeHub();
        using var cache = TestPaths.NewTempDir();
        var data = Payload(300_000, 1);
        hub.Files["unet/diffusion_pytorch_model.safetensors"] = data;
        hub.Files["model_index.json"] = Encoding.UTF8.GetBytes("{}");
        using var client = new HubClient(hub.Endpoint, token: null, cacheDirectory: cache.Path, offline: false);
        var reports = new List<HubDownloadProgress>();
        var path = await client.DownloadFileAsync("owner/model", "unet/diffusion_pytorch_model.safetensors", progress: new SyncProgress<HubDownloadProgress>(reports.Add));

        var repo = Path.Combine(cache.Path, "models--owner--model");
        Assert.Equal(Path.Combine(repo, "snapshots", FakeHub.Commit, "unet", "diffusion_pytorch_model.safetensors"), path);
        Assert.Equal(data, File.ReadAllBytes(path));
        var sha = Convert.ToHexStringLower(SHA256.HashData(data));
        Assert.True(File.Exists(Path.Combine(repo, "blobs", sha)));
        Assert.NotNull(new FileInfo(path).LinkTarget); // a relative symlink into blobs/, as huggingface_hub makes
        Assert.Equal(FakeHub.Commit, File.ReadAllText(Path.Combine(repo, "refs", "main")));
        Assert.Equal(data.Length, reports[^1].BytesDone);

        // A second call reuses the blob: HEAD only, no GET of the content.
        int gets = hub.Log.Count(l => l.StartsWith("GET /cdn/"));
        await client.DownloadFileAsync("owner/model", "unet/diffusion_pytorch_model.safetensors");
        Assert.Equal(gets, hub.Log.Count(l => l.StartsWith("GET /cdn/")));

        // Offline (flag) and unreachable (server gone): served from the cache.
        using var offline = new HubClient(hub.Endpoint, null, cache.Path, offline: true);
        Assert.Equal(path, await offline.DownloadFileAsync("owner/model", "unet/diffusion_pytorch_model.safetensors"));
        var missing = await Assert.ThrowsAsync<DreamBoothException>(() => offline.DownloadFileAsync("owner/model", "vae/x.safetensors"));
        Assert.Contains("HF_HUB_OFFLINE", missing.Message);
        hub.Dispose();
        Assert.Equal(path, await client.DownloadFileAsync("owner/model", "unet/diffusion_pytorch_model.safetensors"));
    }

    [Fact]
    public async Task Interrupted_transfer_resumes_with_a_range_request()
    {
        using var hub = new FakeHub { LfsRedirect = false };
        using var cache = TestPaths.NewTempDir();
        var data = Payload(1_000_000, 2);
        hub.Files["v1-5.safetensors"] = data;
        hub.CutAfter = 400_000;
        using (var once = new HubClient(hub.Endpoint, null, cache.Path, offline: false) { MaxAttempts = 1 })
        {
            var e = await Assert.ThrowsAsync<DreamBoothException>(() => once.DownloadFileAsync("owner/model", "v1-5.safetensors"));
            Assert.Contains("run again to resume", e.Message);
        }
        var partial = Directory.GetFiles(Path.Combine(cache.Path, "models--owner--model", "blobs"), "*.incomplete").Single();
        long kept = new FileInfo(partial).Length;
        Assert.InRange(kept, 1, data.Length - 1);

        using var client = new HubClient(hub.Endpoint, null, cache.Path, offline: false);
        var path = await client.DownloadFileAsync("owner/model", "v1-5.safetensors");
        Assert.Equal(data, File.ReadAllBytes(path));
        Assert.Contains(hub.Log, l => l.StartsWith("GET /owner/model/resolve/main/v1-5.safetensors") && l.Contains($"range=bytes={kept}-"));
        Assert.False(File.Exists(partial));
    }

    [Fact]
    public async Task Automatic_retry_resumes_within_one_call()
    {
        using var hub = new FakeHub();
        using var cache = TestPaths.NewTempDir();
        var data = Payload(500_000, 3);
        hub.Files["a.bin"] = data;
        hub.CutAfter = 100_000;
        using var client = new HubClient(hub.Endpoint, null, cache.Path, offline: false);
        Assert.Equal(data, File.ReadAllBytes(await client.DownloadFileAsync("owner/model", "a.bin")));
        Assert.Contains(hub.Log, l => l.StartsWith("GET /cdn/") && l.Contains("range=bytes="));
    }

    [Fact]
    public async Task Token_is_sent_as_bearer_and_missing_token_is_a_clear_error()
    {
        using var hub = new FakeHub { RequiredToken = "hf_secret" };
        using var cache = TestPaths.NewTempDir();
        hub.Files["model_index.json"] = Encoding.UTF8.GetBytes("{\"_class_name\":\"StableDiffusionPipeline\"}");
        using var anonymous = new HubClient(hub.Endpoint, null, cache.Path, offline: false);
        // (the process may have HF_TOKEN set; construct with an explicit wrong token to be independent of it)
        using var wrong = new HubClient(hub.Endpoint, "hf_wrong", cache.Path, offline: false);
        var e = await Assert.ThrowsAsync<DreamBoothException>(() => wrong.DownloadFileAsync("owner/gated", "model_index.json"));
        Assert.Contains("401", e.Message);
        using var authed = new HubClient(hub.Endpoint, "hf_secret", cache.Path, offline: false);
        var p = await authed.DownloadFileAsync("owner/gated", "model_index.json");
        Assert.Contains("StableDiffusionPipeline", File.ReadAllText(p));
        Assert.Contains(hub.Log, l => l.Contains("auth=Bearer hf_secret"));
    }

    [Fact]
    public async Task Snapshot_downloads_the_selected_files()
    {
        using var hub = new FakeHub();
        using var cache = TestPaths.NewTempDir();
        hub.Files["model_index.json"] = Encoding.UTF8.GetBytes("{}");
        hub.Files["unet/config.json"] = Encoding.UTF8.GetBytes("{\"a\":1}");
        hub.Files["unet/diffusion_pytorch_model.bin"] = Payload(10, 4);
        using var client = new HubClient(hub.Endpoint, null, cache.Path, offline: false);
        var dir = await client.SnapshotAsync("owner/model", f => !f.EndsWith(".bin"));
        Assert.True(File.Exists(Path.Combine(dir, "unet", "config.json")));
        Assert.False(File.Exists(Path.Combine(dir, "unet", "diffusion_pytorch_model.bin")));
        Assert.Throws<DreamBoothException>(() => client.TryGetCached("../etc", "passwd"));
        Assert.Throws<DreamBoothException>(() => client.TryGetCached("owner/model", "../../x"));
        Assert.True(HubClient.IsRepoId("SG161222/Realistic_Vision_V2.0"));
        Assert.False(HubClient.IsRepoId("/tmp/model.safetensors"));
    }
}

/// <summary>IProgress that reports synchronously (Progress&lt;T&gt; posts to the thread pool, which races assertions).</summary>
sealed class SyncProgress<T>(Action<T> report) : IProgress<T>
{
    public void Report(T value) => report(value);
}
