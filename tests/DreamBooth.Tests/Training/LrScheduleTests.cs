using DreamBooth.Training;

namespace DreamBooth.Tests.Training;

public class LrScheduleTests
{
    static double F(string name, int step, int cycles = 1, double power = 1, double end = 0, double baseLr = 1.0) =>
        new LrSchedule(name, warmupSteps: 2, totalSteps: 10, cycles, power, end).Factor(step, baseLr);

    [Fact]
    public void Constant_and_constant_with_warmup()
    {
        Assert.All(new[] { 0, 1, 5, 10 }, s => Assert.Equal(1.0, F("constant", s)));
        Assert.Equal([0.0, 0.5, 1.0, 1.0, 1.0], new[] { 0, 1, 2, 5, 10 }.Select(s => F("constant_with_warmup", s)));
        // the recipe: warmup 0 = full LR from step 0
        Assert.Equal(1.0, new LrSchedule("constant_with_warmup", 0, 100).Factor(0));
    }

    [Fact]
    public void Linear_warms_up_then_decays_to_zero()
    {
        Assert.Equal([0.0, 0.5, 1.0, 0.5, 0.0], new[] { 0, 1, 2, 6, 10 }.Select(s => F("linear", s)));
    }

    [Fact]
    public void Cosine_is_a_half_wave_after_warmup()
    {
        Assert.Equal(1.0, F("cosine", 2), 12);
        Assert.Equal(0.5 * (1 + Math.Cos(Math.PI / 4)), F("cosine", 4), 12);
        Assert.Equal(0.5, F("cosine", 6), 12);
        Assert.Equal(0.0, F("cosine", 10), 12);
    }

    [Fact]
    public void Cosine_with_restarts_restarts_each_cycle()
    {
        Assert.Equal(0.5, F("cosine_with_restarts", 4, cycles: 2), 12);   // half way through cycle 1
        Assert.Equal(1.0, F("cosine_with_restarts", 6, cycles: 2), 12);   // restart
        Assert.Equal(0.5, F("cosine_with_restarts", 8, cycles: 2), 12);
        Assert.Equal(0.0, F("cosine_with_restarts", 10, cycles: 2), 12);
    }

    [Fact]
    public void Polynomial_decays_from_base_to_lr_end_with_power()
    {
        Assert.Equal(0.25, F("polynomial", 6, power: 2, baseLr: 1e-4), 12);
        Assert.Equal(0.55, F("polynomial", 6, power: 1, end: 1e-5, baseLr: 1e-4), 12);
        Assert.Equal(0.1, F("polynomial", 11, end: 1e-5, baseLr: 1e-4), 12);
        Assert.Equal(0.5, F("polynomial", 1, baseLr: 1e-4), 12);   // warmup
    }

    [Fact]
    public void Unknown_schedule_is_a_user_error()
    {
        var e = Assert.Throws<DreamBoothException>(() => new LrSchedule("rex", 0, 10));
        Assert.Contains("lr_scheduler = \"rex\"", e.Message);
    }
}
