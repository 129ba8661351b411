namespace DreamBooth.Schedulers;

/// <summary>Creates samplers by their AUTOMATIC1111 names.</summary>
public static class SamplerFactory
{
    /// <summary>The A1111 sampler names this workbench implements, in menu order.</summary>
    public static IReadOnlyList<string> Names { get; } = ["DPM++ 2M Karras", "DPM++ 2M", "Euler a", "Euler", "DDIM"];

    /// <summary>The default sampler ("DPM++ 2M Karras").</summary>
    public const string Default = "DPM++ 2M Karras";

    /// <summary>
    /// A sampler over <paramref name="schedule"/> for <paramref name="steps"/> steps. Names match A1111's
    /// case-insensitively ("euler a" works). <paramref name="spacing"/> overrides the schedule's
    /// timestep_spacing and the sampler's default.
    /// </summary>
    public static ISampler Create(string a1111Name, NoiseSchedule schedule, int steps, TimestepSpacing? spacing = null)
    {
        ArgumentNullException.ThrowIfNull(schedule);
        string name = Canonical(a1111Name);
        return name switch
        {
            "DDIM" => new DDIMScheduler(schedule, steps, spacing),
            "Euler" => new EulerDiscreteScheduler(schedule, steps, spacing),
            "Euler a" => new EulerAncestralDiscreteScheduler(schedule, steps, spacing),
            "DPM++ 2M" => new DPMSolverMultistepScheduler(schedule, steps, spacing, useKarrasSigmas: false),
            "DPM++ 2M Karras" => new DPMSolverMultistepScheduler(schedule, steps, spacing, useKarrasSigmas: true),
            _ => throw new InvalidOperationException(name),
        };
    }

    /// <summary>The canonical spelling of a sampler name, or a <see cref="DreamBoothException"/> listing the valid ones.</summary>
    public static string Canonical(string? a1111Name)
    {
        string trimmed = (a1111Name ?? "").Trim();
        foreach (var n in Names)
            if (string.Equals(n, trimmed, StringComparison.OrdinalIgnoreCase)) return n;
        throw new DreamBoothException($"unknown sampler '{a1111Name}': expected one of {string.Join(", ", Names.Select(n => $"\"{n}\""))}");
    }

    /// <summary>Whether a name is one <see cref="Create"/> accepts.</summary>
    public static bool IsKnown(string? a1111Name) =>
        Names.Any(n => string.Equals(n, (a1111Name ?? "").Trim(), StringComparison.OrdinalIgnoreCase));
}
