using System.Globalization;
using System.Text.Json;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Schedulers;

/// <summary>
/// The forward (training) diffusion process of a model: β per training timestep, ᾱ = Πα, and the
/// operations training needs (add noise, velocity target, SNR). Read from the model's diffusers
/// <c>scheduler/scheduler_config.json</c>; every sampler is built over one of these.
/// </summary>
public sealed class NoiseSchedule
{
    readonly double[] _betas;
    readonly double[] _alphas;
    readonly double[] _alphasCumprod;
    readonly Dictionary<(DeviceType, int), Tensor> _alphasCumprodOn = new();

    public int NumTrainTimesteps { get; }
    public double BetaStart { get; }
    public double BetaEnd { get; }
    /// <summary>"scaled_linear", "linear", "squaredcos_cap_v2" or "trained" (explicit <c>trained_betas</c>).</summary>
    public string BetaSchedule { get; }
    public PredictionType PredictionType { get; }
    /// <summary>Added to "leading" timesteps (1 for SD 1.x, so the last step is t = 1).</summary>
    public int StepsOffset { get; }
    /// <summary>The config's <c>timestep_spacing</c>, or null when absent (each sampler then uses diffusers' default for its class).</summary>
    public TimestepSpacing? TimestepSpacing { get; }
    /// <summary>DDIM: whether the step after t = 0 uses ᾱ = 1 (true) or ᾱ₀ (false, SD 1.x).</summary>
    public bool SetAlphaToOne { get; }
    /// <summary>Betas rescaled to zero terminal SNR (Lin et al. 2023).</summary>
    public bool RescaleBetasZeroSnr { get; }

    public IReadOnlyList<double> Betas => _betas;
    public IReadOnlyList<double> Alphas => _alphas;
    public IReadOnlyList<double> AlphasCumprod => _alphasCumprod;

    public NoiseSchedule(
        int numTrainTimesteps = 1000,
        double betaStart = 0.00085,
        double betaEnd = 0.012,
        string betaSchedule = "scaled_linear",
        PredictionType predictionType = PredictionType.Epsilon,
        int stepsOffset = 0,
        TimestepSpacing? timestepSpacing = null,
        bool setAlphaToOne = false,
        bool rescaleBetasZeroSnr = false,
        IReadOnlyList<double>? trainedBetas = null)
    {
        if (numTrainTimesteps < 2) throw new DreamBoothException($"scheduler config: num_train_timesteps must be at least 2, got {numTrainTimesteps}");
        if (stepsOffset < 0) throw new DreamBoothException($"scheduler config: steps_offset must be >= 0, got {stepsOffset}");
        NumTrainTimesteps = numTrainTimesteps;
        BetaStart = betaStart;
        BetaEnd = betaEnd;
        PredictionType = predictionType;
        StepsOffset = stepsOffset;
        TimestepSpacing = timestepSpacing;
        SetAlphaToOne = setAlphaToOne;
        RescaleBetasZeroSnr = rescaleBetasZeroSnr;

        if (trainedBetas is not null)
        {
            if (trainedBetas.Count != numTrainTimesteps)
                throw new DreamBoothException($"scheduler config: trained_betas has {trainedBetas.Count} values, expected num_train_timesteps = {numTrainTimesteps}");
            _betas = trainedBetas.ToArray();
            BetaSchedule = "trained";
        }
        else
        {
            BetaSchedule = betaSchedule;
            _betas = betaSchedule switch
            {
                "linear" => SchedulerMath.Linspace(betaStart, betaEnd, numTrainTimesteps),
                "scaled_linear" => SchedulerMath.Linspace(Math.Sqrt(betaStart), Math.Sqrt(betaEnd), numTrainTimesteps).Select(b => b * b).ToArray(),
                "squaredcos_cap_v2" => CosineBetas(numTrainTimesteps),
                _ => throw new DreamBoothException($"scheduler config: beta_schedule '{betaSchedule}' is not supported (expected scaled_linear, linear or squaredcos_cap_v2)"),
            };
        }
        foreach (var b in _betas)
            if (!(b > 0 && b < 1)) throw new DreamBoothException($"scheduler config: every beta must be in (0, 1), found {b.ToString(CultureInfo.InvariantCulture)}");
        if (rescaleBetasZeroSnr) _betas = RescaleZeroTerminalSnr(_betas);

        _alphas = _betas.Select(b => 1 - b).ToArray();
        _alphasCumprod = new double[numTrainTimesteps];
        double acc = 1;
        for (int i = 0; i < numTrainTimesteps; i++) { acc *= _alphas[i]; _alphasCumprod[i] = acc; }
    }

    /// <summary>SD 1.x: scaled_linear 0.00085 → 0.012 over 1000 steps, epsilon, steps_offset 1.</summary>
    public static NoiseSchedule StableDiffusion15 => new(stepsOffset: 1);

    /// <summary>
    /// Parses a diffusers <c>scheduler_config.json</c> (any scheduler class; keys that do not describe
    /// the noise schedule are ignored). Null or empty gives <see cref="StableDiffusion15"/>.
    /// </summary>
    public static NoiseSchedule FromConfigJson(string? json)
    {
        if (string.IsNullOrWhiteSpace(json)) return StableDiffusion15;
        JsonDocument doc;
        try { doc = JsonDocument.Parse(json); }
        catch (JsonException e) { throw new DreamBoothException($"scheduler_config.json is not valid JSON: {e.Message}", e); }
        using (doc)
        {
            var root = doc.RootElement;
            if (root.ValueKind != JsonValueKind.Object) throw new DreamBoothException("scheduler_config.json: expected a JSON object");
            int n = GetInt(root, "num_train_timesteps") ?? 1000;
            double betaStart = GetDouble(root, "beta_start") ?? 0.0001;
            double betaEnd = GetDouble(root, "beta_end") ?? 0.02;
            string schedule = GetString(root, "beta_schedule") ?? "linear";
            var prediction = (GetString(root, "prediction_type") ?? "epsilon") switch
            {
                "epsilon" => PredictionType.Epsilon,
                "v_prediction" => PredictionType.VPrediction,
                var p => throw new DreamBoothException($"scheduler_config.json: prediction_type '{p}' is not supported (expected epsilon or v_prediction)"),
            };
            TimestepSpacing? spacing = GetString(root, "timestep_spacing") switch
            {
                null => null,
                "leading" => Schedulers.TimestepSpacing.Leading,
                "trailing" => Schedulers.TimestepSpacing.Trailing,
                "linspace" => Schedulers.TimestepSpacing.Linspace,
                var s => throw new DreamBoothException($"scheduler_config.json: timestep_spacing '{s}' is not supported (expected leading, trailing or linspace)"),
            };
            double[]? trained = null;
            if (root.TryGetProperty("trained_betas", out var tb) && tb.ValueKind == JsonValueKind.Array)
                trained = tb.EnumerateArray().Select(e => e.ValueKind == JsonValueKind.Number ? e.GetDouble()
                    : throw new DreamBoothException("scheduler_config.json: trained_betas must be a list of numbers")).ToArray();
            return new NoiseSchedule(n, betaStart, betaEnd, schedule, prediction,
                stepsOffset: GetInt(root, "steps_offset") ?? 0,
                timestepSpacing: spacing,
                setAlphaToOne: GetBool(root, "set_alpha_to_one") ?? true,
                rescaleBetasZeroSnr: GetBool(root, "rescale_betas_zero_snr") ?? false,
                trainedBetas: trained);
        }
    }

    /// <summary>The same schedule predicting something else (e.g. a v-prediction fine-tune of an epsilon base).</summary>
    public NoiseSchedule WithPredictionType(PredictionType predictionType) =>
        new(NumTrainTimesteps, BetaStart, BetaEnd, BetaSchedule == "trained" ? "scaled_linear" : BetaSchedule, predictionType,
            StepsOffset, TimestepSpacing, SetAlphaToOne, RescaleBetasZeroSnr, BetaSchedule == "trained" ? _betas : null);

    /// <summary>VE noise level σ_t = sqrt((1 − ᾱ_t) / ᾱ_t) of a training timestep (infinite at zero terminal SNR).</summary>
    public double Sigma(int t) => Math.Sqrt((1 - _alphasCumprod[t]) / _alphasCumprod[t]);

    /// <summary>All training σ_t, ascending with t.</summary>
    public double[] Sigmas() => SchedulerMath.SigmasFromAlphasCumprod(_alphasCumprod);

    /// <summary>Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t) of one training timestep.</summary>
    public double SnrAt(int t) => _alphasCumprod[t] / (1 - _alphasCumprod[t]);

    /// <summary>x_t = sqrt(ᾱ_t)·x0 + sqrt(1 − ᾱ_t)·ε, per sample. <paramref name="timesteps"/> is int64 [B]; x0 and noise [B, …].</summary>
    public Tensor AddNoise(Tensor originalSamples, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var (sqrtAlpha, sqrtOneMinusAlpha) = Coefficients(originalSamples, timesteps);
        var noisy = sqrtAlpha * originalSamples + sqrtOneMinusAlpha * noise;
        return noisy.MoveToOuterDisposeScope();
    }

    /// <summary>v = sqrt(ᾱ_t)·ε − sqrt(1 − ᾱ_t)·x0 (the v-prediction target).</summary>
    public Tensor GetVelocity(Tensor sample, Tensor noise, Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var (sqrtAlpha, sqrtOneMinusAlpha) = Coefficients(sample, timesteps);
        var velocity = sqrtAlpha * noise - sqrtOneMinusAlpha * sample;
        return velocity.MoveToOuterDisposeScope();
    }

    /// <summary>The training target for this schedule's prediction type: ε, or v.</summary>
    public Tensor Target(Tensor latents, Tensor noise, Tensor timesteps) =>
        PredictionType == PredictionType.Epsilon ? noise.alias() : GetVelocity(latents, noise, timesteps);

    /// <summary>SNR ᾱ_t / (1 − ᾱ_t) for each timestep in an int64 tensor [B]; float32 on the timesteps' device.</summary>
    public Tensor Snr(Tensor timesteps)
    {
        using var scope = NewDisposeScope();
        var ac = AlphasCumprodOn(timesteps.device).index_select(0, timesteps.to(ScalarType.Int64));
        var snr = (ac / (1 - ac)).to(ScalarType.Float32);
        return snr.MoveToOuterDisposeScope();
    }

    /// <summary>ᾱ as a 1-D tensor on the given device (float64 unless a dtype is given).</summary>
    public Tensor AlphasCumprodTensor(Device? device = null, ScalarType dtype = ScalarType.Float64) =>
        tensor(_alphasCumprod, dtype: ScalarType.Float64).to(dtype, device ?? CPU);

    /// <summary>
    /// ᾱ (float64) on <paramref name="device"/>, uploaded once per device and kept: a copy from the host to CUDA waits
    /// for everything queued before it, so a training step must not make one (<see cref="AddNoise"/> runs every step).
    /// The schedule owns it; callers index into it and never dispose it.
    /// </summary>
    internal Tensor AlphasCumprodOn(Device device)
    {
        lock (_alphasCumprodOn)
        {
            var key = (device.type, device.index);
            if (!_alphasCumprodOn.TryGetValue(key, out var t))
                _alphasCumprodOn[key] = t = AlphasCumprodTensor(device, ScalarType.Float64).DetachFromDisposeScope();
            return t;
        }
    }

    (Tensor sqrtAlpha, Tensor sqrtOneMinusAlpha) Coefficients(Tensor like, Tensor timesteps)
    {
        if (timesteps.dim() != 1 || timesteps.shape[0] != like.shape[0])
            throw new ArgumentException($"timesteps must be [B] with B = {like.shape[0]}, got [{string.Join(", ", timesteps.shape)}]");
        var ac = AlphasCumprodOn(like.device).index_select(0, timesteps.to(ScalarType.Int64).to(like.device));
        var shape = new long[like.dim()];
        Array.Fill(shape, 1L);
        shape[0] = like.shape[0];
        var dtype = like.dtype;
        var sqrtAlpha = ac.sqrt().to(dtype).reshape(shape);
        var sqrtOneMinusAlpha = (1 - ac).sqrt().to(dtype).reshape(shape);
        return (sqrtAlpha, sqrtOneMinusAlpha);
    }

    static double[] CosineBetas(int n, double maxBeta = 0.999)
    {
        static double AlphaBar(double t) => Math.Pow(Math.Cos((t + 0.008) / 1.008 * Math.PI / 2), 2);
        var betas = new double[n];
        for (int i = 0; i < n; i++)
        {
            double t1 = (double)i / n, t2 = (double)(i + 1) / n;
            betas[i] = Math.Min(1 - AlphaBar(t2) / AlphaBar(t1), maxBeta);
        }
        return betas;
    }

    /// <summary>diffusers' <c>rescale_zero_terminal_snr</c>: shift and scale sqrt(ᾱ) so the last is 0 and the first unchanged.</summary>
    static double[] RescaleZeroTerminalSnr(double[] betas)
    {
        int n = betas.Length;
        var sqrtAc = new double[n];
        double acc = 1;
        for (int i = 0; i < n; i++) { acc *= 1 - betas[i]; sqrtAc[i] = Math.Sqrt(acc); }
        double first = sqrtAc[0], last = sqrtAc[n - 1];
        for (int i = 0; i < n; i++) sqrtAc[i] = (sqrtAc[i] - last) * first / (first - last);
        var ac = sqrtAc.Select(s => s * s).ToArray();
        var result = new double[n];
        result[0] = 1 - ac[0];
        for (int i = 1; i < n; i++) result[i] = 1 - ac[i] / ac[i - 1];
        return result;
    }

    static int? GetInt(JsonElement root, string key) =>
        root.TryGetProperty(key, out var e) && e.ValueKind != JsonValueKind.Null
            ? e.ValueKind == JsonValueKind.Number && e.TryGetInt32(out var v) ? v : throw new DreamBoothException($"scheduler_config.json: '{key}' must be an integer, got {e.GetRawText()}")
            : null;

    static double? GetDouble(JsonElement root, string key) =>
        root.TryGetProperty(key, out var e) && e.ValueKind != JsonValueKind.Null
            ? e.ValueKind == JsonValueKind.Number ? e.GetDouble() : throw new DreamBoothException($"scheduler_config.json: '{key}' must be a number, got {e.GetRawText()}")
            : null;

    static string? GetString(JsonElement root, string key) =>
        root.TryGetProperty(key, out var e) && e.ValueKind != JsonValueKind.Null
            ? e.ValueKind == JsonValueKind.String ? e.GetString() : throw new DreamBoothException($"scheduler_config.json: '{key}' must be a string, got {e.GetRawText()}")
            : null;

    static bool? GetBool(JsonElement root, string key) =>
        root.TryGetProperty(key, out var e) && e.ValueKind != JsonValueKind.Null
            ? e.ValueKind is JsonValueKind.True or JsonValueKind.False ? e.GetBoolean() : throw new DreamBoothException($"scheduler_config.json: '{key}' must be true or false, got {e.GetRawText()}")
            : null;
}
