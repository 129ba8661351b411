using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using TorchSharp;
using static TorchSharp.torch;

namespace DreamBooth.Checkpoints;

/// <summary>
/// Loads our modules from, and saves them to, the single-file (LDM / A1111) layout through <see cref="LdmKeyMap"/>.
/// Loading is strict: every file key is a weight we place, a known non-weight we skip (schedule buffers, position_ids,
/// EMA unless asked for), or an error naming it; every module key must be filled; shapes must match.
/// </summary>
public static class SingleFileCheckpoint
{
    /// <summary>The LDM block layout of a UNet and VAE config.</summary>
    public static LdmBlockLayout LayoutOf(UNet2DConditionConfig unet, AutoencoderKLConfig vae) => new(
        unet.DownBlockTypes.Select(t => t.StartsWith("CrossAttn", StringComparison.Ordinal)).ToList(),
        unet.UpBlockTypes.Select(t => t.StartsWith("CrossAttn", StringComparison.Ordinal)).ToList(),
        unet.LayersPerBlock,
        unet.MidBlockType == "UNetMidBlock2DCrossAttn",
        vae.BlockOutChannels.Count,
        vae.LayersPerBlock);

    /// <summary>
    /// Checks, by key names and shapes, that a single file is an SD 1.x-style checkpoint that fits <paramref name="unet"/>
    /// (SD 1.5 by default). SDXL, SD 2.x, inpainting and partial files get a clear error before anything is built.
    /// </summary>
    public static void CheckArchitecture(ITensorFile file, UNet2DConditionConfig unet)
    {
        var keys = file.Keys.ToHashSet(StringComparer.Ordinal);
        if (keys.Any(k => k.StartsWith("conditioner.embedders.", StringComparison.Ordinal)))
            throw new DreamBoothException($"{file.Path}: an SDXL checkpoint (conditioner.embedders.*); only Stable Diffusion 1.x is supported");
        if (keys.Any(k => k.StartsWith("cond_stage_model.model.", StringComparison.Ordinal)))
            throw new DreamBoothException($"{file.Path}: an SD 2.x checkpoint (OpenCLIP text encoder, cond_stage_model.model.*); only Stable Diffusion 1.x is supported");
        const string convIn = LdmKeyMap.UNetPrefix + "input_blocks.0.0.weight";
        if (!keys.Contains(convIn))
        {
            var parts = string.Join(", ", keys.Select(CheckpointInspector.SingleFileComponent).Distinct());
            throw new DreamBoothException($"{file.Path}: not a full Stable Diffusion checkpoint (no {convIn}; found components: {parts})");
        }
        var (_, shape) = file.Describe(convIn);
        if (shape.Length == 4 && shape[1] != unet.InChannels)
            throw new DreamBoothException($"{file.Path}: UNet takes {shape[1]} input channels, expected {unet.InChannels} (inpainting/instruct models are not supported)");
        const string toK = LdmKeyMap.UNetPrefix + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight";
        if (keys.Contains(toK))
        {
            var (_, k) = file.Describe(toK);
            if (k.Length == 2 && k[1] != unet.CrossAttentionDim)
                throw new DreamBoothException($"{file.Path}: cross-attention width {k[1]}, expected {unet.CrossAttentionDim} ({(k[1] == 1024 ? "an SD 2.x model, not supported" : "SD 1.x uses 768")})");
        }
        if (!keys.Any(k => k.StartsWith(LdmKeyMap.TextPrefix, StringComparison.Ordinal)))
            throw new DreamBoothException($"{file.Path}: no text encoder weights (cond_stage_model.transformer.*)");
        if (!keys.Any(k => k.StartsWith(LdmKeyMap.VaePrefix, StringComparison.Ordinal)))
            throw new DreamBoothException($"{file.Path}: no VAE weights (first_stage_model.*)");
    }

    /// <summary>Copies the file's weights into the three modules. With <paramref name="useEma"/>, UNet weights come from model_ema.*.</summary>
    public static void LoadInto(ITensorFile file, CLIPTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae, bool useEma = false)
    {
        var map = new LdmKeyMap(LayoutOf(unet.Config, vae.Config));
        var targets = new Dictionary<SdComponent, Dictionary<string, Tensor>>
        {
            [SdComponent.TextEncoder] = StateDictLoader.Targets(textEncoder),
            [SdComponent.UNet] = StateDictLoader.Targets(unet),
            [SdComponent.Vae] = StateDictLoader.Targets(vae),
        };
        var filled = new HashSet<(SdComponent, string)>();
        var ema = useEma ? file.Keys.Where(k => k.StartsWith(LdmKeyMap.EmaPrefix, StringComparison.Ordinal)).ToHashSet(StringComparer.Ordinal) : [];
        if (useEma && ema.Count == 0) throw new DreamBoothException($"{file.Path}: has no EMA weights (model_ema.*); load without EMA");
        foreach (var key in file.Keys)
        {
            if (key.StartsWith(LdmKeyMap.EmaPrefix, StringComparison.Ordinal) || LdmKeyMap.IsIgnorable(key, loadingEma: false)) continue;
            var pair = map.ToDiffusers(key)
                ?? throw new DreamBoothException($"{file.Path}: unexpected key '{key}' (not part of an SD 1.x UNet, VAE or text encoder)");
            var source = key;
            if (useEma && pair.Component == SdComponent.UNet)
            {
                source = LdmKeyMap.EmaKey(key);
                if (!ema.Remove(source)) throw new DreamBoothException($"{file.Path}: EMA weights lack '{source}' (for '{key}')");
            }
            if (!targets[pair.Component].TryGetValue(pair.DiffusersKey, out var target))
                throw new DreamBoothException($"{file.Path}: key '{key}' maps to '{pair.DiffusersKey}', which the {pair.Component} model does not have (config mismatch?)");
            StateDictLoader.Copy(file, source, target, pair.Reshape, $"{pair.Component} '{pair.DiffusersKey}'");
            if (!filled.Add((pair.Component, pair.DiffusersKey)))
                throw new DreamBoothException($"{file.Path}: two keys map to {pair.Component} '{pair.DiffusersKey}' (the last was '{key}')");
        }
        foreach (var (component, dict) in targets)
            foreach (var k in dict.Keys)
                if (!filled.Contains((component, k)))
                    throw new DreamBoothException($"{file.Path}: missing key '{map.ToLdm(component, k).LdmKey}' ({component} '{k}')");
    }

    /// <summary>The A1111 single-file state dict of three modules: LDM names, VAE attention as 1×1 convs, floats cast to <paramref name="dtype"/>.</summary>
    public static Dictionary<string, Tensor> ToLdmStateDict(CLIPTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae, ScalarType dtype)
    {
        if (dtype is not (ScalarType.Float32 or ScalarType.Float16 or ScalarType.BFloat16))
            throw new DreamBoothException($"single-file save dtype must be fp32, fp16 or bf16, not {dtype}");
        var map = new LdmKeyMap(LayoutOf(unet.Config, vae.Config));
        var result = new Dictionary<string, Tensor>(StringComparer.Ordinal);
        void Add(SdComponent c, nn.Module m)
        {
            foreach (var (k, t) in m.state_dict())
            {
                var pair = map.ToLdm(c, k);
                var v = t.detach();
                if (pair.Reshape) v = v.reshape([.. v.shape, 1, 1]);
                if (v.is_floating_point()) v = v.to(dtype);
                if (v.device_type != DeviceType.CPU) v = v.cpu();
                if (!result.TryAdd(pair.LdmKey, v)) throw new InvalidOperationException($"two tensors map to '{pair.LdmKey}'");
            }
        }
        Add(SdComponent.UNet, unet);
        Add(SdComponent.Vae, vae);
        Add(SdComponent.TextEncoder, textEncoder);
        // transformers keeps position_ids out of the state dict; A1111-style files carry it (int64 [1, 77]).
        result[LdmKeyMap.TextPositionIds] = arange(textEncoder.Config.MaxPositionEmbeddings, dtype: ScalarType.Int64).unsqueeze(0);
        return result;
    }
}

/// <summary>Strict copying of file tensors into a module's parameters and buffers.</summary>
public static class StateDictLoader
{
    /// <summary>The module's state-dict tensors by key (they alias the live parameters).</summary>
    public static Dictionary<string, Tensor> Targets(nn.Module module) => new(module.state_dict(), StringComparer.Ordinal);

    /// <summary>Copies tensor <paramref name="key"/> of <paramref name="file"/> into <paramref name="target"/> (dtype converted), shapes checked.</summary>
    public static void Copy(ITensorFile file, string key, Tensor target, bool reshape, string what)
    {
        var (_, shape) = file.Describe(key);
        var expected = target.shape;
        bool ok = reshape
            ? shape.Length == 4 && shape[2] == 1 && shape[3] == 1 && shape[..2].SequenceEqual(expected) || shape.SequenceEqual(expected)
            : shape.SequenceEqual(expected);
        if (!ok)
            throw new DreamBoothException($"{file.Path}: '{key}' has shape [{string.Join(", ", shape)}] but {what} expects [{string.Join(", ", expected)}]");
        using var scope = NewDisposeScope();
        using var noGrad = no_grad();
        var source = file.Load(key);
        if (reshape) source = source.reshape(expected);
        target.copy_(source);
    }

    /// <summary>Loads a diffusers-layout file into a module: same keys, strict, optional keys to skip.</summary>
    public static void LoadStrict(nn.Module module, ITensorFile file, string component, IReadOnlySet<string>? ignore = null)
    {
        var targets = Targets(module);
        var filled = new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in file.Keys)
        {
            if (ignore?.Contains(key) == true) continue;
            if (!targets.TryGetValue(key, out var target))
                throw new DreamBoothException($"{file.Path}: unexpected key '{key}' for the {component}");
            Copy(file, key, target, reshape: false, $"{component} '{key}'");
            filled.Add(key);
        }
        foreach (var k in targets.Keys)
            if (!filled.Contains(k)) throw new DreamBoothException($"{file.Path}: missing key '{k}' for the {component}");
    }
}
