using DreamBooth.Tests.Infrastructure;
using DreamBooth.Training;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Tests.Training;

/// <summary>
/// Issue 15 point 5: the recipe's memory settings for a 24 GB GPU at 768x1024 — gradient checkpointing on by default
/// (the A1111 extension's default, db_config.py: gradient_checkpointing = True) and the EMA copy on the device
/// ema_device names.
/// </summary>
public class MemoryDefaultsTests
{
    [Fact]
    public void Gradient_checkpointing_is_on_by_default_and_reaches_the_unet()
    {
        Assert.True(new TrainingConfig().GradientCheckpointing);
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir) with { Epochs = 1 };
        Assert.True(c.GradientCheckpointing);
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(c, m))
            Assert.True(m.UNet.GradientCheckpointing);
        using (var m = DreamBoothTrainerTests.TinyModel())
        using (var t = new DreamBoothTrainer(c with { GradientCheckpointing = false }, m))
            Assert.False(m.UNet.GradientCheckpointing);
    }

    [Fact]
    public void Ema_tensors_live_on_the_device_ema_device_names()
    {
        // the placement rule: "cpu" → the CPU whatever the training device, "device" → the training device
        var cuda = new Device(DeviceType.CUDA, 0);   // a description only: nothing is allocated on it
        Assert.Equal(DeviceType.CPU, DreamBoothTrainer.EmaDeviceFor(new TrainingConfig { EmaDevice = "cpu" }, cuda).type);
        Assert.Equal((DeviceType.CUDA, 0), (DreamBoothTrainer.EmaDeviceFor(new TrainingConfig { EmaDevice = "device" }, cuda) is var d ? (d.type, d.index) : default));

        // EmaModel puts its fp32 shadow where it is told and keeps it there through updates (the meta device stands in
        // for a second device on this CPU-only machine: no data, real placement)
        var meta = new Device(DeviceType.META);
        var p = torch.randn(4, 3);
        using var ema = new EmaModel([("w", p)], 0.9, warmup: false, meta);
        Assert.Equal(DeviceType.META, ema.Device.type);
        Assert.Equal(DeviceType.META, ema.Shadow["w"].device_type);
        Assert.Equal(ScalarType.Float32, ema.Shadow["w"].dtype);
        ema.Update([("w", p)]);
        Assert.Equal(DeviceType.META, ema.Shadow["w"].device_type);

        // and the trainer builds its EMA there
        using var dir = TestPaths.NewTempDir();
        var c = DreamBoothTrainerTests.TinyConfig(dir) with { Epochs = 1, UseEma = true, EmaDevice = "cpu" };
        using var m = DreamBoothTrainerTests.TinyModel();
        using var t = new DreamBoothTrainer(c, m);
        Assert.Equal(DeviceType.CPU, t.Ema!.Device.type);
        Assert.All(t.Ema.Shadow.Values, s => Assert.Equal(DeviceType.CPU, s.device_type));
    }
}
