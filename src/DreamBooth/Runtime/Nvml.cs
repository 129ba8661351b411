using System.Runtime.InteropServices;
using System.Text;

namespace DreamBooth.Runtime;

/// <summary>
/// Minimal NVML bindings (TorchSharp has no CUDA memory statistics): device names, memory in use,
/// and a sampler that records the peak used memory of a device while a workload runs.
/// </summary>
public static class Nvml
{
    public sealed record GpuInfo(int Index, string Name, long TotalBytes, long UsedBytes);

    [StructLayout(LayoutKind.Sequential)]
    struct MemoryInfo { public ulong Total; public ulong Free; public ulong Used; }

    const string Lib = "libnvidia-ml.so.1";
    [DllImport(Lib, EntryPoint = "nvmlInit_v2")] static extern int Init();
    [DllImport(Lib, EntryPoint = "nvmlDeviceGetCount_v2")] static extern int GetCount(out uint count);
    [DllImport(Lib, EntryPoint = "nvmlDeviceGetHandleByIndex_v2")] static extern int GetHandle(uint index, out IntPtr device);
    [DllImport(Lib, EntryPoint = "nvmlDeviceGetName")] static extern int GetName(IntPtr device, byte[] name, uint length);
    [DllImport(Lib, EntryPoint = "nvmlDeviceGetMemoryInfo")] static extern int GetMemory(IntPtr device, out MemoryInfo info);

    static bool? _ok;

    /// <summary>True when the NVIDIA management library is present and initialises.</summary>
    public static bool Available
    {
        get
        {
            if (_ok is bool b) return b;
            try { _ok = Init() == 0; }
            catch (Exception e) when (e is DllNotFoundException or EntryPointNotFoundException) { _ok = false; }
            return _ok.Value;
        }
    }

    public static IReadOnlyList<GpuInfo> Devices()
    {
        var list = new List<GpuInfo>();
        if (!Available || GetCount(out uint n) != 0) return list;
        for (uint i = 0; i < n; i++)
        {
            if (GetHandle(i, out var h) != 0) continue;
            var buf = new byte[96];
            string name = GetName(h, buf, (uint)buf.Length) == 0 ? Encoding.ASCII.GetString(buf).TrimEnd('\0') : "?";
            long total = 0, used = 0;
            if (GetMemory(h, out var m) == 0) { total = (long)m.Total; used = (long)m.Used; }
            list.Add(new GpuInfo((int)i, name, total, used));
        }
        return list;
    }

    /// <summary>Used bytes on one device right now (−1 when unknown).</summary>
    public static long UsedBytes(int index)
    {
        if (!Available || GetHandle((uint)index, out var h) != 0 || GetMemory(h, out var m) != 0) return -1;
        return (long)m.Used;
    }

    /// <summary>Polls used memory on a background thread and keeps the maximum (device-wide, includes other processes).</summary>
    public sealed class PeakSampler : IDisposable
    {
        readonly int _index;
        readonly CancellationTokenSource _cts = new();
        readonly Thread _thread;
        long _peak = -1;
        public PeakSampler(int index = 0, int intervalMs = 5)
        {
            _index = index;
            _thread = new Thread(() =>
            {
                while (!_cts.IsCancellationRequested)
                {
                    long u = UsedBytes(_index);
                    if (u > Interlocked.Read(ref _peak)) Interlocked.Exchange(ref _peak, u);
                    Thread.Sleep(intervalMs);
                }
            }) { IsBackground = true, Name = "nvml-peak" };
            _thread.Start();
        }
        public long PeakBytes => Interlocked.Read(ref _peak);
        public void Dispose() { _cts.Cancel(); _thread.Join(); }
    }
}
