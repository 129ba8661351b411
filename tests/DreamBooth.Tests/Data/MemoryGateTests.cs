using DreamBooth.Data;

namespace DreamBooth.Tests.Data;

public class MemoryGateTests
{
    [Fact]
    public async Task Requests_wait_for_room_and_an_oversized_one_runs_alone()
    {
        var gate = new DatasetPreparer.MemoryGate(100);
        var a = await gate.AcquireAsync(60, CancellationToken.None);
        var b = gate.AcquireAsync(60, CancellationToken.None);
        await Task.Delay(50);
        Assert.False(b.IsCompleted); // 60 + 60 > 100
        var small = await gate.AcquireAsync(40, CancellationToken.None); // 60 + 40 fits
        small.Dispose();
        a.Dispose();
        var bLease = await b.WaitAsync(TimeSpan.FromSeconds(5));
        var huge = gate.AcquireAsync(500, CancellationToken.None);
        await Task.Delay(50);
        Assert.False(huge.IsCompleted); // waits until it can run alone
        bLease.Dispose();
        (await huge.WaitAsync(TimeSpan.FromSeconds(5))).Dispose();
        using var cts = new CancellationTokenSource();
        var held = await gate.AcquireAsync(100, CancellationToken.None);
        var cancelled = gate.AcquireAsync(1, cts.Token);
        cts.Cancel();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelled);
        held.Dispose();
    }
}
