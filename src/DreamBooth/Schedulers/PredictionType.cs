namespace DreamBooth.Schedulers;

/// <summary>What the UNet predicts (diffusers' <c>prediction_type</c>): the added noise, or the velocity v = α·ε − σ·x0.</summary>
public enum PredictionType
{
    /// <summary><c>"epsilon"</c>: the noise that was added (SD 1.x).</summary>
    Epsilon,
    /// <summary><c>"v_prediction"</c>: the velocity (SD 2.x 768-v and v-parameterized fine-tunes).</summary>
    VPrediction,
}

/// <summary>How inference timesteps are placed over the training timesteps (diffusers' <c>timestep_spacing</c>).</summary>
public enum TimestepSpacing
{
    /// <summary><c>"leading"</c>: 0, r, 2r, … reversed, plus <c>steps_offset</c> (r = N // steps).</summary>
    Leading,
    /// <summary><c>"trailing"</c>: N, N − r, … rounded, minus 1 (r = N / steps); always starts at N − 1.</summary>
    Trailing,
    /// <summary><c>"linspace"</c>: evenly from N − 1 down to 0.</summary>
    Linspace,
}
