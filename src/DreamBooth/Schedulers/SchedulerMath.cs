namespace DreamBooth.Schedulers;

/// <summary>
/// The numpy operations diffusers' schedulers are written with, reproduced step for step in double
/// precision (same operation order, round-half-to-even), so integer timesteps come out identical.
/// </summary>
internal static class SchedulerMath
{
    /// <summary><c>np.linspace(start, stop, num)</c> with endpoint: i·step + start, last element exactly stop.</summary>
    public static double[] Linspace(double start, double stop, int num)
    {
        if (num <= 0) return [];
        if (num == 1) return [start];
        var y = new double[num];
        double step = (stop - start) / (num - 1);
        for (int i = 0; i < num; i++) y[i] = i * step + start;
        y[num - 1] = stop;
        return y;
    }

    /// <summary><c>np.arange(start, stop, step)</c> for floats: length ceil((stop − start) / step), element start + i·step.</summary>
    public static double[] Arange(double start, double stop, double step)
    {
        int len = (int)Math.Max(0, Math.Ceiling((stop - start) / step));
        var y = new double[len];
        for (int i = 0; i < len; i++) y[i] = start + i * step;
        return y;
    }

    /// <summary><c>np.round</c>: half to even.</summary>
    public static double Round(double x) => Math.Round(x, MidpointRounding.ToEven);

    /// <summary><c>np.interp(x, arange(len(fp)), fp)</c>: linear interpolation on an integer grid, clamped at the ends.</summary>
    public static double InterpOnIndex(double x, IReadOnlyList<double> fp)
    {
        if (x <= 0) return fp[0];
        int last = fp.Count - 1;
        if (x >= last) return fp[last];
        int lo = (int)Math.Floor(x);
        double w = x - lo;
        return w == 0 ? fp[lo] : fp[lo] + (fp[lo + 1] - fp[lo]) * w;
    }

    /// <summary>Karras et al. (2022) noise levels: (σmax^(1/ρ) + i/(n−1)·(σmin^(1/ρ) − σmax^(1/ρ)))^ρ, descending, n values.</summary>
    public static double[] KarrasSigmas(double sigmaMin, double sigmaMax, int n, double rho = 7.0)
    {
        var ramp = Linspace(0, 1, n);
        double minInvRho = Math.Pow(sigmaMin, 1 / rho);
        double maxInvRho = Math.Pow(sigmaMax, 1 / rho);
        var s = new double[n];
        for (int i = 0; i < n; i++) s[i] = Math.Pow(maxInvRho + ramp[i] * (minInvRho - maxInvRho), rho);
        return s;
    }

    /// <summary>
    /// diffusers' <c>_sigma_to_t</c>: the (fractional) training timestep whose σ equals <paramref name="sigma"/>,
    /// interpolating linearly in log σ between neighbouring timesteps (log σ ascending with t).
    /// </summary>
    public static double SigmaToT(double sigma, IReadOnlyList<double> logSigmas)
    {
        double logSigma = Math.Log(Math.Max(sigma, 1e-10));
        // low_idx = index of the last log σ that is ≤ log_sigma (cumsum(dists >= 0).argmax), clipped to len − 2
        int count = 0;
        for (int i = 0; i < logSigmas.Count; i++) if (logSigma - logSigmas[i] >= 0) count++;
        int lowIdx = Math.Min(Math.Max(count - 1, 0), logSigmas.Count - 2);
        int highIdx = lowIdx + 1;
        double low = logSigmas[lowIdx], high = logSigmas[highIdx];
        double w = Math.Clamp((low - logSigma) / (low - high), 0, 1);
        return (1 - w) * lowIdx + w * highIdx;
    }

    /// <summary>VE noise level σ = sqrt((1 − ᾱ) / ᾱ) for each ᾱ.</summary>
    public static double[] SigmasFromAlphasCumprod(IReadOnlyList<double> alphasCumprod)
    {
        var s = new double[alphasCumprod.Count];
        for (int i = 0; i < s.Length; i++) s[i] = Math.Sqrt((1 - alphasCumprod[i]) / alphasCumprod[i]);
        return s;
    }
}

internal static class Spacing
{
    /// <summary>
    /// diffusers' <c>set_timesteps</c> placement shared by DDIM and the Euler schedulers (descending):
    /// linspace = linspace(0, N−1, steps) reversed (rounded for DDIM, fractional for Euler);
    /// leading = arange(steps)·(N // steps) reversed + steps_offset; trailing = round(arange(N, 0, −N/steps)) − 1.
    /// </summary>
    public static double[] Timesteps(TimestepSpacing spacing, int numTrain, int steps, int stepsOffset, bool roundLinspace)
    {
        switch (spacing)
        {
            case TimestepSpacing.Linspace:
            {
                var t = SchedulerMath.Linspace(0, numTrain - 1, steps);
                Array.Reverse(t);
                return roundLinspace ? t.Select(SchedulerMath.Round).ToArray() : t;
            }
            case TimestepSpacing.Leading:
            {
                int ratio = numTrain / steps;
                var t = new double[steps];
                for (int i = 0; i < steps; i++) t[steps - 1 - i] = SchedulerMath.Round((double)i * ratio) + stepsOffset;
                return t;
            }
            case TimestepSpacing.Trailing:
            {
                double ratio = (double)numTrain / steps;
                return SchedulerMath.Arange(numTrain, 0, -ratio).Select(x => SchedulerMath.Round(x) - 1).ToArray();
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(spacing));
        }
    }

    public static void Validate(int steps, int numTrain)
    {
        if (steps < 1 || steps > numTrain)
            throw new DreamBoothException($"sampling steps must be between 1 and {numTrain}, got {steps}");
    }
}
