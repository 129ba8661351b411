namespace DreamBooth.Checkpoints;

/// <summary>Which SD component a key belongs to.</summary>
public enum SdComponent { UNet, Vae, TextEncoder }

/// <summary>A key of our modules (diffusers layout) and its single-file (LDM) name; <see cref="Reshape"/> marks conv1×1 ⇄ linear.</summary>
public readonly record struct LdmKeyPair(SdComponent Component, string DiffusersKey, string LdmKey, bool Reshape);

/// <summary>The block structure a mapping needs: read from the UNet and VAE configs, so tiny configs map too.</summary>
public sealed record LdmBlockLayout(
    IReadOnlyList<bool> UNetDownHasAttention,
    IReadOnlyList<bool> UNetUpHasAttention,
    int UNetLayersPerBlock,
    bool UNetMidHasAttention,
    int VaeBlocks,
    int VaeLayersPerBlock)
{
    /// <summary>SD 1.x: four UNet levels (cross-attention in the first three down / last three up), two layers per block; VAE four levels.</summary>
    public static LdmBlockLayout StableDiffusion1 { get; } = new([true, true, true, false], [false, true, true, true], 2, true, 4, 2);
}

/// <summary>
/// The single-file (original LDM / CompVis, as A1111, ComfyUI and Civitai files use) layout ⇄ diffusers layout, written once:
/// a table of block prefixes (diffusers prefix ⇄ LDM prefix) derived from the block layout, plus a few leaf renames
/// (ResNet and VAE-attention parameter names), applied by longest-prefix match in either direction. The VAE mid-block
/// attention's q/k/v/proj_out are 1×1 convolutions in LDM and linear layers in diffusers (<see cref="LdmKeyPair.Reshape"/>).
/// </summary>
public sealed class LdmKeyMap
{
    public const string UNetPrefix = "model.diffusion_model.";
    public const string VaePrefix = "first_stage_model.";
    public const string TextPrefix = "cond_stage_model.transformer.";
    public const string EmaPrefix = "model_ema.";
    /// <summary>transformers' CLIPTextModel keeps position_ids as a non-persistent buffer; LDM files carry it, we write it for compatibility.</summary>
    public const string TextPositionIds = "cond_stage_model.transformer.text_model.embeddings.position_ids";

    /// <summary>Training-schedule buffers LatentDiffusion stores beside the weights; not model weights, ignored on load.</summary>
    public static readonly IReadOnlySet<string> ScheduleBuffers = new HashSet<string>(StringComparer.Ordinal)
    {
        "betas", "alphas_cumprod", "alphas_cumprod_prev", "sqrt_alphas_cumprod", "sqrt_one_minus_alphas_cumprod",
        "log_one_minus_alphas_cumprod", "sqrt_recip_alphas_cumprod", "sqrt_recipm1_alphas_cumprod", "posterior_variance",
        "posterior_log_variance_clipped", "posterior_mean_coef1", "posterior_mean_coef2", "logvar", "lvlb_weights",
        "model_ema.decay", "model_ema.num_updates",
    };

    static readonly (string Diffusers, string Ldm)[] UNetResnet =
    [
        ("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("time_emb_proj.", "emb_layers.1."),
        ("norm2.", "out_layers.0."), ("conv2.", "out_layers.3."), ("conv_shortcut.", "skip_connection."),
    ];
    static readonly (string Diffusers, string Ldm)[] VaeResnet = [("conv_shortcut.", "nin_shortcut.")];
    static readonly (string Diffusers, string Ldm)[] VaeAttention =
    [
        ("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out."),
    ];

    enum Leaf { Same, UNetResnet, VaeResnet, VaeAttention }
    sealed record Block(SdComponent Component, string Diffusers, string Ldm, Leaf Leaf);

    readonly List<Block> _blocks = [];

    public LdmBlockLayout Layout { get; }

    public LdmKeyMap(LdmBlockLayout layout)
    {
        Layout = layout;
        if (layout.UNetDownHasAttention.Count != layout.UNetUpHasAttention.Count)
            throw new DreamBoothException($"UNet config: {layout.UNetDownHasAttention.Count} down blocks but {layout.UNetUpHasAttention.Count} up blocks");
        // ---- UNet ----
        void U(string d, string l, Leaf leaf = Leaf.Same) => _blocks.Add(new(SdComponent.UNet, d, UNetPrefix + l, leaf));
        U("time_embedding.linear_1.", "time_embed.0.");
        U("time_embedding.linear_2.", "time_embed.2.");
        U("conv_in.", "input_blocks.0.0.");
        U("conv_norm_out.", "out.0.");
        U("conv_out.", "out.2.");
        int n = layout.UNetLayersPerBlock, levels = layout.UNetDownHasAttention.Count;
        for (int b = 0; b < levels; b++)
        {
            for (int j = 0; j < n; j++)
            {
                int i = 1 + b * (n + 1) + j;
                U($"down_blocks.{b}.resnets.{j}.", $"input_blocks.{i}.0.", Leaf.UNetResnet);
                if (layout.UNetDownHasAttention[b]) U($"down_blocks.{b}.attentions.{j}.", $"input_blocks.{i}.1.");
            }
            if (b < levels - 1) U($"down_blocks.{b}.downsamplers.0.conv.", $"input_blocks.{1 + b * (n + 1) + n}.0.op.");
        }
        U("mid_block.resnets.0.", "middle_block.0.", Leaf.UNetResnet);
        if (layout.UNetMidHasAttention)
        {
            U("mid_block.attentions.0.", "middle_block.1.");
            U("mid_block.resnets.1.", "middle_block.2.", Leaf.UNetResnet);
        }
        else U("mid_block.resnets.1.", "middle_block.1.", Leaf.UNetResnet);
        for (int b = 0; b < levels; b++)
        {
            bool attn = layout.UNetUpHasAttention[b];
            for (int j = 0; j <= n; j++)
            {
                int i = b * (n + 1) + j;
                U($"up_blocks.{b}.resnets.{j}.", $"output_blocks.{i}.0.", Leaf.UNetResnet);
                if (attn) U($"up_blocks.{b}.attentions.{j}.", $"output_blocks.{i}.1.");
            }
            if (b < levels - 1) U($"up_blocks.{b}.upsamplers.0.conv.", $"output_blocks.{b * (n + 1) + n}.{(attn ? 2 : 1)}.conv.");
        }
        // ---- VAE ----
        void V(string d, string l, Leaf leaf = Leaf.Same) => _blocks.Add(new(SdComponent.Vae, d, VaePrefix + l, leaf));
        foreach (var part in new[] { "encoder", "decoder" })
        {
            V($"{part}.conv_in.", $"{part}.conv_in.");
            V($"{part}.conv_out.", $"{part}.conv_out.");
            V($"{part}.conv_norm_out.", $"{part}.norm_out.");
            V($"{part}.mid_block.resnets.0.", $"{part}.mid.block_1.", Leaf.VaeResnet);
            V($"{part}.mid_block.resnets.1.", $"{part}.mid.block_2.", Leaf.VaeResnet);
            V($"{part}.mid_block.attentions.0.", $"{part}.mid.attn_1.", Leaf.VaeAttention);
        }
        int vb = layout.VaeBlocks, vl = layout.VaeLayersPerBlock;
        for (int b = 0; b < vb; b++)
        {
            for (int j = 0; j < vl; j++) V($"encoder.down_blocks.{b}.resnets.{j}.", $"encoder.down.{b}.block.{j}.", Leaf.VaeResnet);
            if (b < vb - 1) V($"encoder.down_blocks.{b}.downsamplers.0.conv.", $"encoder.down.{b}.downsample.conv.");
            // the decoder's up blocks run in the opposite order in LDM (up.0 is the last, full-resolution level)
            int u = vb - 1 - b;
            for (int j = 0; j <= vl; j++) V($"decoder.up_blocks.{b}.resnets.{j}.", $"decoder.up.{u}.block.{j}.", Leaf.VaeResnet);
            if (b < vb - 1) V($"decoder.up_blocks.{b}.upsamplers.0.conv.", $"decoder.up.{u}.upsample.conv.");
        }
        V("quant_conv.", "quant_conv.");
        V("post_quant_conv.", "post_quant_conv.");
        // ---- text encoder ----
        _blocks.Add(new(SdComponent.TextEncoder, "text_model.", TextPrefix + "text_model.", Leaf.Same));
    }

    static (string, string)[] LeafTable(Leaf leaf) => leaf switch
    {
        Leaf.UNetResnet => UNetResnet,
        Leaf.VaeResnet => VaeResnet,
        Leaf.VaeAttention => VaeAttention,
        _ => [],
    };

    /// <summary>The LDM key for a key of <paramref name="component"/>'s diffusers state dict; an error names an unmappable key.</summary>
    public LdmKeyPair ToLdm(SdComponent component, string diffusersKey)
    {
        Block? best = null;
        foreach (var b in _blocks)
            if (b.Component == component && diffusersKey.StartsWith(b.Diffusers, StringComparison.Ordinal) && (best is null || b.Diffusers.Length > best.Diffusers.Length))
                best = b;
        if (best is null) throw new DreamBoothException($"{component} key '{diffusersKey}' has no single-file (LDM) equivalent for this model layout");
        var rest = diffusersKey[best.Diffusers.Length..];
        var (leafRest, renamed) = Rename(rest, best.Leaf, toLdm: true);
        return new LdmKeyPair(component, diffusersKey, best.Ldm + leafRest, IsReshaped(best.Leaf, renamed, leafRest));
    }

    /// <summary>The component and diffusers key for an LDM key, or null when the key is not a model weight of this layout.</summary>
    public LdmKeyPair? ToDiffusers(string ldmKey)
    {
        var key = ldmKey;
        // Older files name the text encoder without the text_model. level (transformers < 4.x layout).
        if (key.StartsWith(TextPrefix, StringComparison.Ordinal) && !key.StartsWith(TextPrefix + "text_model.", StringComparison.Ordinal))
            key = TextPrefix + "text_model." + key[TextPrefix.Length..];
        Block? best = null;
        foreach (var b in _blocks)
            if (key.StartsWith(b.Ldm, StringComparison.Ordinal) && (best is null || b.Ldm.Length > best.Ldm.Length))
                best = b;
        if (best is null) return null;
        var rest = key[best.Ldm.Length..];
        var (leafRest, renamed) = Rename(rest, best.Leaf, toLdm: false);
        return new LdmKeyPair(best.Component, best.Diffusers + leafRest, ldmKey, IsReshaped(best.Leaf, renamed, rest));
    }

    static (string Remainder, bool Renamed) Rename(string rest, Leaf leaf, bool toLdm)
    {
        foreach (var (d, l) in LeafTable(leaf))
        {
            var from = toLdm ? d : l;
            if (rest.StartsWith(from, StringComparison.Ordinal)) return ((toLdm ? l : d) + rest[from.Length..], true);
        }
        return (rest, false);
    }

    static bool IsReshaped(Leaf leaf, bool renamed, string rest) =>
        leaf == Leaf.VaeAttention && renamed && rest.EndsWith(".weight", StringComparison.Ordinal) && !rest.StartsWith("group_norm.", StringComparison.Ordinal) && !rest.StartsWith("norm.", StringComparison.Ordinal);

    /// <summary>The EMA copy's key of a UNet LDM key: LitEma drops the dots (<c>model_ema.diffusion_modelinput_blocks00weight</c>).</summary>
    public static string EmaKey(string unetLdmKey)
    {
        if (!unetLdmKey.StartsWith(UNetPrefix, StringComparison.Ordinal)) throw new ArgumentException($"not a UNet LDM key: {unetLdmKey}");
        return EmaPrefix + unetLdmKey["model.".Length..].Replace(".", "", StringComparison.Ordinal);
    }

    /// <summary>Keys that are neither weights nor something we know to skip: what strict loading reports.</summary>
    public static bool IsIgnorable(string ldmKey, bool loadingEma) =>
        ScheduleBuffers.Contains(ldmKey) || ldmKey == TextPositionIds || ldmKey == TextPrefix + "embeddings.position_ids"
        || (!loadingEma && ldmKey.StartsWith(EmaPrefix, StringComparison.Ordinal));
}
