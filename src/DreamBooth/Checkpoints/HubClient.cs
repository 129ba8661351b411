using System.Net;
using System.Net.Http.Headers;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.RegularExpressions;
using DreamBooth.Runtime;

namespace DreamBooth.Checkpoints;

/// <summary>Download progress of one file.</summary>
public sealed record HubDownloadProgress(string RepoId, string FileName, long BytesDone, long? TotalBytes);

/// <summary>
/// A small Hugging Face Hub client: resolves <c>{repo}/resolve/{revision}/{file}</c>, downloads with resume (HTTP Range)
/// into the standard cache layout that Python's huggingface_hub uses (<c>models--owner--name/blobs/&lt;etag&gt;</c>,
/// <c>snapshots/&lt;commit&gt;/&lt;file&gt;</c> as relative symlinks, <c>refs/&lt;revision&gt;</c>), so files downloaded by
/// either side are reused by the other. Honours <c>HF_ENDPOINT</c>, <c>HF_TOKEN</c>, <c>HF_HUB_OFFLINE</c>, and falls back to
/// the cache when the network fails.
/// </summary>
public sealed partial class HubClient : IDisposable
{
    public const string DefaultEndpoint = "https://huggingface.co";

    readonly HttpClient _http;
    readonly string? _token;

    public string Endpoint { get; }
    public string CacheDirectory { get; }
    public bool Offline { get; }
    /// <summary>Attempts per file; each retry resumes from the bytes already on disk.</summary>
    public int MaxAttempts { get; init; } = 3;

    public HubClient(string? endpoint = null, string? token = null, string? cacheDirectory = null, bool? offline = null, HttpMessageHandler? handler = null)
    {
        Endpoint = (endpoint ?? Env("HF_ENDPOINT") ?? DefaultEndpoint).TrimEnd('/');
        _token = token ?? Env("HF_TOKEN") ?? Env("HUGGING_FACE_HUB_TOKEN");
        CacheDirectory = cacheDirectory ?? WorkbenchPaths.HuggingFaceHubCache;
        Offline = offline ?? Env("HF_HUB_OFFLINE") is "1" or "true" or "TRUE" or "True" or "yes";
        _http = new HttpClient(handler ?? new SocketsHttpHandler { AllowAutoRedirect = false, ConnectTimeout = TimeSpan.FromSeconds(20) }, disposeHandler: true)
        {
            Timeout = Timeout.InfiniteTimeSpan,
        };
        _http.DefaultRequestHeaders.UserAgent.ParseAdd("dreambooth-notebooks/0.1");
    }

    static string? Env(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v : null;

    [GeneratedRegex(@"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.\-]{0,95}$")]
    private static partial Regex RepoIdPattern();
    [GeneratedRegex("^[0-9a-f]{40}$")]
    private static partial Regex CommitPattern();

    /// <summary>True when <paramref name="s"/> has the shape of a Hub repo id (owner/name) and is not an existing local path.</summary>
    public static bool IsRepoId(string s) => RepoIdPattern().IsMatch(s) && !File.Exists(s) && !Directory.Exists(s) && !s.Contains("..", StringComparison.Ordinal);

    public string RepoFolder(string repoId) => Path.Combine(CacheDirectory, "models--" + repoId.Replace("/", "--", StringComparison.Ordinal));

    static void CheckRepoId(string repoId)
    {
        if (!RepoIdPattern().IsMatch(repoId) || repoId.Contains("..", StringComparison.Ordinal))
            throw new DreamBoothException($"'{repoId}' is not a Hugging Face repo id (expected owner/name)");
    }

    static void CheckFileName(string file)
    {
        if (string.IsNullOrEmpty(file) || file.StartsWith('/') || file.Contains('\\') || file.Split('/').Any(p => p is "" or "." or ".."))
            throw new DreamBoothException($"'{file}' is not a valid file name inside a repo");
    }

    /// <summary>The cached copy of a file, or null: revision → commit through refs/, then snapshots/&lt;commit&gt;/&lt;file&gt;.</summary>
    public string? TryGetCached(string repoId, string fileName, string revision = "main")
    {
        CheckRepoId(repoId); CheckFileName(fileName);
        var commit = CachedCommit(repoId, revision);
        if (commit is null) return null;
        var p = Path.Combine(RepoFolder(repoId), "snapshots", commit, fileName);
        return File.Exists(p) ? p : null;
    }

    string? CachedCommit(string repoId, string revision)
    {
        if (CommitPattern().IsMatch(revision)) return revision;
        var refFile = Path.Combine(RepoFolder(repoId), "refs", revision);
        return File.Exists(refFile) ? File.ReadAllText(refFile).Trim() : null;
    }

    /// <summary>Downloads (or reuses) one file and returns its path in the cache snapshot.</summary>
    public async Task<string> DownloadFileAsync(string repoId, string fileName, string revision = "main",
        IProgress<HubDownloadProgress>? progress = null, CancellationToken ct = default)
    {
        CheckRepoId(repoId); CheckFileName(fileName);
        if (Offline)
            return TryGetCached(repoId, fileName, revision)
                ?? throw new DreamBoothException($"{repoId}/{fileName} (revision {revision}) is not in the cache {CacheDirectory} and HF_HUB_OFFLINE is set");
        var url = $"{Endpoint}/{repoId}/resolve/{Uri.EscapeDataString(revision)}/{string.Join('/', fileName.Split('/').Select(Uri.EscapeDataString))}";
        FileMeta meta;
        try { meta = await HeadAsync(url, repoId, fileName, ct); }
        catch (HttpRequestException e)
        {
            return TryGetCached(repoId, fileName, revision)
                ?? throw new DreamBoothException($"cannot reach {Endpoint} for {repoId}/{fileName} ({e.Message}) and it is not in the cache {CacheDirectory}", e);
        }
        var repo = RepoFolder(repoId);
        var blob = Path.Combine(repo, "blobs", meta.ETag);
        var pointer = Path.Combine(repo, "snapshots", meta.Commit, fileName);
        if (!CommitPattern().IsMatch(revision)) WriteRef(repo, revision, meta.Commit);
        if (!File.Exists(blob)) await DownloadBlobAsync(meta, blob, repoId, fileName, progress, ct);
        else progress?.Report(new HubDownloadProgress(repoId, fileName, new FileInfo(blob).Length, meta.Size));
        LinkSnapshot(blob, pointer);
        return pointer;
    }

    /// <summary>The file names of a repo at a revision (<c>/api/models/{repo}/revision/{rev}</c>), and the commit.</summary>
    public async Task<(string Commit, IReadOnlyList<string> Files)> ListFilesAsync(string repoId, string revision = "main", CancellationToken ct = default)
    {
        CheckRepoId(repoId);
        using var response = await SendAsync(HttpMethod.Get, $"{Endpoint}/api/models/{repoId}/revision/{Uri.EscapeDataString(revision)}", null, ct);
        EnsureOk(response, repoId, "(file list)");
        using var doc = JsonDocument.Parse(await response.Content.ReadAsStringAsync(ct));
        var commit = doc.RootElement.TryGetProperty("sha", out var sha) ? sha.GetString() ?? "" : "";
        if (!CommitPattern().IsMatch(commit)) throw new DreamBoothException($"{Endpoint}: repo info for {repoId} has no commit sha");
        var files = doc.RootElement.TryGetProperty("siblings", out var sib)
            ? sib.EnumerateArray().Select(s => s.GetProperty("rfilename").GetString()!).ToList()
            : [];
        return (commit, files);
    }

    /// <summary>Downloads the files of a repo that <paramref name="include"/> selects; returns the snapshot folder. Offline: the cached snapshot.</summary>
    public async Task<string> SnapshotAsync(string repoId, Func<string, bool> include, string revision = "main",
        IProgress<HubDownloadProgress>? progress = null, CancellationToken ct = default)
    {
        CheckRepoId(repoId);
        string? Cached() => CachedCommit(repoId, revision) is { } c && Directory.Exists(Path.Combine(RepoFolder(repoId), "snapshots", c))
            ? Path.Combine(RepoFolder(repoId), "snapshots", c) : null;
        if (Offline) return Cached() ?? throw new DreamBoothException($"{repoId} (revision {revision}) is not in the cache {CacheDirectory} and HF_HUB_OFFLINE is set");
        (string Commit, IReadOnlyList<string> Files) listing;
        try { listing = await ListFilesAsync(repoId, revision, ct); }
        catch (HttpRequestException e)
        {
            return Cached() ?? throw new DreamBoothException($"cannot reach {Endpoint} for {repoId} ({e.Message}) and it is not in the cache {CacheDirectory}", e);
        }
        foreach (var f in listing.Files.Where(include))
            await DownloadFileAsync(repoId, f, listing.Commit, progress, ct);
        if (!CommitPattern().IsMatch(revision)) WriteRef(RepoFolder(repoId), revision, listing.Commit);
        return Path.Combine(RepoFolder(repoId), "snapshots", listing.Commit);
    }

    sealed record FileMeta(string Url, string ETag, string Commit, long? Size);

    async Task<FileMeta> HeadAsync(string url, string repoId, string fileName, CancellationToken ct)
    {
        // Like huggingface_hub: HEAD without following redirects to the CDN, so the LFS etag (sha256) and commit come from the Hub.
        var current = url;
        for (int hop = 0; hop < 6; hop++)
        {
            using var response = await SendAsync(HttpMethod.Head, current, null, ct);
            if (IsRedirect(response.StatusCode) && response.Headers.Location is { } loc)
            {
                var next = new Uri(new Uri(current), loc);
                // Relative redirects (renamed repos) are followed for metadata; the LFS CDN redirect carries the metadata already.
                if (response.Headers.Contains("X-Repo-Commit") || next.Host != new Uri(current).Host)
                    return Meta(response, next.ToString());
                current = next.ToString();
                continue;
            }
            EnsureOk(response, repoId, fileName);
            return Meta(response, current);
        }
        throw new DreamBoothException($"{url}: too many redirects");

        FileMeta Meta(HttpResponseMessage r, string downloadUrl)
        {
            string? etag = Header(r, "X-Linked-Etag") ?? r.Headers.ETag?.Tag ?? Header(r, "ETag");
            string? commit = Header(r, "X-Repo-Commit");
            if (etag is null || commit is null || !CommitPattern().IsMatch(commit))
                throw new DreamBoothException($"{url}: the server sent no ETag/X-Repo-Commit (is {Endpoint} a Hugging Face endpoint?)");
            etag = etag.Replace("W/", "", StringComparison.Ordinal).Trim('"');
            if (etag.Length == 0 || etag.Any(c => !char.IsAsciiLetterOrDigit(c) && c != '-' && c != '_'))
                throw new DreamBoothException($"{url}: unusable ETag '{etag}'");
            long? size = long.TryParse(Header(r, "X-Linked-Size"), out var s) ? s : r.Content.Headers.ContentLength;
            return new FileMeta(downloadUrl, etag, commit, size);
        }
    }

    static string? Header(HttpResponseMessage r, string name) =>
        r.Headers.TryGetValues(name, out var v) ? v.FirstOrDefault() : r.Content.Headers.TryGetValues(name, out var c) ? c.FirstOrDefault() : null;

    static bool IsRedirect(HttpStatusCode c) => (int)c is 301 or 302 or 303 or 307 or 308;

    async Task DownloadBlobAsync(FileMeta meta, string blob, string repoId, string fileName, IProgress<HubDownloadProgress>? progress, CancellationToken ct)
    {
        Directory.CreateDirectory(Path.GetDirectoryName(blob)!);
        var partial = blob + ".incomplete";
        Exception? last = null;
        for (int attempt = 1; attempt <= MaxAttempts; attempt++)
        {
            long have = File.Exists(partial) ? new FileInfo(partial).Length : 0;
            try
            {
                if (meta.Size is long total && have == total) break;
                if (meta.Size is long t2 && have > t2) { File.Delete(partial); have = 0; }
                using var response = await GetFollowingAsync(meta.Url, have, ct);
                bool resumed = response.StatusCode == HttpStatusCode.PartialContent;
                if (!resumed) EnsureOk(response, repoId, fileName);
                if (resumed && response.Content.Headers.ContentRange?.From != have)
                    throw new DreamBoothException($"{meta.Url}: server answered a resume from byte {have} with range {response.Content.Headers.ContentRange}");
                await using (var file = new FileStream(partial, resumed ? FileMode.Append : FileMode.Create, FileAccess.Write, FileShare.None, 1 << 20, useAsync: true))
                await using (var body = await response.Content.ReadAsStreamAsync(ct))
                {
                    long done = resumed ? have : 0;
                    var buffer = new byte[1 << 20];
                    int n;
                    while ((n = await body.ReadAsync(buffer, ct)) > 0)
                    {
                        await file.WriteAsync(buffer.AsMemory(0, n), ct);
                        done += n;
                        progress?.Report(new HubDownloadProgress(repoId, fileName, done, meta.Size));
                    }
                }
                last = null;
                break;
            }
            catch (Exception e) when (e is HttpRequestException or IOException && !ct.IsCancellationRequested)
            {
                last = e;
            }
        }
        if (last is not null)
            throw new DreamBoothException($"download of {repoId}/{fileName} was interrupted ({last.Message}); {new FileInfo(partial).Length} bytes kept in {partial}, run again to resume", last);
        long got = new FileInfo(partial).Length;
        if (meta.Size is long size && got != size)
        {
            throw new DreamBoothException($"download of {repoId}/{fileName} ended at {got} of {size} bytes; run again to resume");
        }
        // LFS etags are the file's SHA-256: verify before the blob becomes visible.
        if (meta.ETag.Length == 64 && meta.ETag.All(char.IsAsciiHexDigitLower))
        {
            string actual;
            await using (var fs = File.OpenRead(partial)) actual = Convert.ToHexStringLower(await SHA256.HashDataAsync(fs, ct));
            if (actual != meta.ETag)
            {
                File.Delete(partial);
                throw new DreamBoothException($"download of {repoId}/{fileName} is corrupt (sha256 {actual}, expected {meta.ETag}); deleted, run again");
            }
        }
        File.Move(partial, blob, overwrite: true);
    }

    async Task<HttpResponseMessage> GetFollowingAsync(string url, long from, CancellationToken ct)
    {
        var current = url;
        for (int hop = 0; hop < 6; hop++)
        {
            var response = await SendAsync(HttpMethod.Get, current, from > 0 ? new RangeHeaderValue(from, null) : null, ct, HttpCompletionOption.ResponseHeadersRead);
            if (IsRedirect(response.StatusCode) && response.Headers.Location is { } loc)
            {
                current = new Uri(new Uri(current), loc).ToString();
                response.Dispose();
                continue;
            }
            return response;
        }
        throw new DreamBoothException($"{url}: too many redirects");
    }

    async Task<HttpResponseMessage> SendAsync(HttpMethod method, string url, RangeHeaderValue? range, CancellationToken ct, HttpCompletionOption option = HttpCompletionOption.ResponseContentRead)
    {
        using var request = new HttpRequestMessage(method, url);
        // The token goes to the Hub endpoint only, never to a CDN host we were redirected to.
        if (_token is not null && new Uri(url).Host == new Uri(Endpoint).Host)
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", _token);
        if (range is not null) request.Headers.Range = range;
        return await _http.SendAsync(request, option, ct);
    }

    void EnsureOk(HttpResponseMessage response, string repoId, string fileName)
    {
        if (response.IsSuccessStatusCode) return;
        string hint = response.StatusCode switch
        {
            HttpStatusCode.Unauthorized or HttpStatusCode.Forbidden => _token is null
                ? " (gated or private repo: set HF_TOKEN to a token that has access)"
                : " (HF_TOKEN has no access to this repo; accept its license on the Hub)",
            HttpStatusCode.NotFound => " (no such repo, revision or file)",
            _ => "",
        };
        throw new DreamBoothException($"{Endpoint}: {repoId}/{fileName}: HTTP {(int)response.StatusCode} {response.ReasonPhrase}{hint}");
    }

    static void WriteRef(string repo, string revision, string commit)
    {
        var refFile = Path.Combine(repo, "refs", revision);
        if (File.Exists(refFile) && File.ReadAllText(refFile).Trim() == commit) return;
        IO.AtomicFile.WriteAllText(refFile, commit);
    }

    static void LinkSnapshot(string blob, string pointer)
    {
        if (File.Exists(pointer)) return;
        Directory.CreateDirectory(Path.GetDirectoryName(pointer)!);
        var relative = Path.GetRelativePath(Path.GetDirectoryName(pointer)!, blob);
        try { File.CreateSymbolicLink(pointer, relative); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or PlatformNotSupportedException)
        {
            File.Copy(blob, pointer, overwrite: true); // file systems without symlinks: a copy, as huggingface_hub does
        }
    }

    public void Dispose() => _http.Dispose();
}
