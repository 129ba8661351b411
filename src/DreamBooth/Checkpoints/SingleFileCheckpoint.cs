using System.Reflection;
using DreamBooth.Models.Clip;
using DreamBooth.Models.UNet;
using DreamBooth.Models.Vae;
using TorchSharp;
using TorchSharp.Modules;
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

    /// <summary>
    /// Gives the three modules the file's weights (floats in <paramref name="dtype"/>; null: as built), each read straight
    /// into its final storage, after every key and shape has been checked. With <paramref name="useEma"/>, UNet weights
    /// come from model_ema.*.
    /// </summary>
    public static void LoadInto(ITensorFile file, CLIPTextModel textEncoder, UNet2DConditionModel unet, AutoencoderKL vae, bool useEma = false, ScalarType? dtype = null)
    {
        var map = new LdmKeyMap(LayoutOf(unet.Config, vae.Config));
        var targets = new Dictionary<SdComponent, Dictionary<string, StateDictLoader.Slot>>
        {
            [SdComponent.TextEncoder] = StateDictLoader.Targets(textEncoder),
            [SdComponent.UNet] = StateDictLoader.Targets(unet),
            [SdComponent.Vae] = StateDictLoader.Targets(vae),
        };
        var filled = new HashSet<(SdComponent, string)>();
        var plan = new List<StateDictLoader.Assignment>();
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
            if (!filled.Add((pair.Component, pair.DiffusersKey)))
                throw new DreamBoothException($"{file.Path}: two keys map to {pair.Component} '{pair.DiffusersKey}' (the last was '{key}')");
            plan.Add(new StateDictLoader.Assignment(source, target, pair.Reshape, $"{pair.Component} '{pair.DiffusersKey}'"));
        }
        foreach (var (component, dict) in targets)
            foreach (var k in dict.Keys)
                if (!filled.Contains((component, k)))
                    throw new DreamBoothException($"{file.Path}: missing key '{map.ToLdm(component, k).LdmKey}' ({component} '{k}')");
        StateDictLoader.Load(file, plan, dtype);
        StateDictLoader.EnsureMaterialized(textEncoder, "text encoder");
        StateDictLoader.EnsureMaterialized(unet, "UNet");
        StateDictLoader.EnsureMaterialized(vae, "VAE");
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

/// <summary>
/// Strict loading of file tensors into a module's parameters. Every key and shape is checked before any data is read;
/// then every parameter gets new storage in the load dtype, filled straight from the file
/// (<see cref="ITensorFile.ReadInto"/>, on a few threads: filling fresh memory is page-fault bound and scales with
/// cores), and replaces the module's parameter. The module may have been built on the meta device
/// (<c>Models.Layers.OnMeta</c>): then nothing was allocated or randomly initialised before, and a load holds one
/// copy of the model plus a small staging buffer per thread.
/// </summary>
public static class StateDictLoader
{
    /// <summary>Most threads reading at once (page-cache copies stop scaling before this on common machines).</summary>
    public const int MaxReadThreads = 4;

    /// <summary>One state-dict entry: the module that owns it, its attribute name there, and its current tensor (possibly meta).</summary>
    public sealed record Slot(nn.Module Owner, string Name, Tensor Current, bool IsParameter);

    /// <summary>One tensor to load: file key → module slot; <paramref name="Reshape"/>: a [o, i, 1, 1] kernel may fill an [o, i] weight.</summary>
    public sealed record Assignment(string FileKey, Slot Target, bool Reshape, string What);

    /// <summary>The module's state-dict entries by key.</summary>
    public static Dictionary<string, Slot> Targets(nn.Module module)
    {
        var owners = new Dictionary<string, nn.Module>(StringComparer.Ordinal) { [""] = module };
        foreach (var (name, m) in module.named_modules()) owners[name] = m;
        var parameterNames = new Dictionary<nn.Module, HashSet<string>>(ReferenceEqualityComparer.Instance);
        var result = new Dictionary<string, Slot>(StringComparer.Ordinal);
        foreach (var (key, tensor) in module.state_dict())
        {
            int dot = key.LastIndexOf('.');
            var ownerPath = dot < 0 ? "" : key[..dot];
            var name = key[(dot + 1)..];
            if (!owners.TryGetValue(ownerPath, out var owner))
                throw new InvalidOperationException($"state-dict key '{key}': no submodule '{ownerPath}'");
            if (!parameterNames.TryGetValue(owner, out var names))
                parameterNames[owner] = names = owner.named_parameters(recurse: false).Select(p => p.name).ToHashSet(StringComparer.Ordinal);
            result[key] = new Slot(owner, name, tensor, names.Contains(name));
        }
        return result;
    }

    /// <summary>Throws, naming the key, when the file tensor's shape does not fit its target.</summary>
    public static void CheckShape(ITensorFile file, Assignment a)
    {
        var (_, shape) = file.Describe(a.FileKey);
        var expected = a.Target.Current.shape;
        bool ok = a.Reshape
            ? shape.Length == 4 && shape[2] == 1 && shape[3] == 1 && shape[..2].SequenceEqual(expected) || shape.SequenceEqual(expected)
            : shape.SequenceEqual(expected);
        if (!ok)
            throw new DreamBoothException($"{file.Path}: '{a.FileKey}' has shape [{string.Join(", ", shape)}] but {a.What} expects [{string.Join(", ", expected)}]");
        if (!a.Target.IsParameter && a.Target.Current.device_type == DeviceType.META)
            throw new InvalidOperationException($"{a.What}: a buffer built on the meta device cannot be loaded");
    }

    /// <summary>
    /// Checks every shape, then reads every tensor of <paramref name="plan"/> into new storage (floats in
    /// <paramref name="dtype"/>, null: the target's own dtype; other types as the target's) and gives it to its
    /// module. When a read fails (a short file, a bad dtype), nothing is placed and everything read so far is freed.
    /// </summary>
    public static void Load(ITensorFile file, IReadOnlyList<Assignment> plan, ScalarType? dtype = null)
    {
        foreach (var a in plan) CheckShape(file, a);
        var data = new Tensor?[plan.Count];
        try
        {
            int next = -1, workers = Math.Clamp(Environment.ProcessorCount, 1, MaxReadThreads);
            using var failed = new CancellationTokenSource();
            void Work()
            {
                int i;
                while (!failed.IsCancellationRequested && (i = Interlocked.Increment(ref next)) < plan.Count)
                {
                    var target = plan[i].Target;
                    var type = !target.IsParameter ? target.Current.dtype
                        : dtype is { } d && target.Current.is_floating_point() ? d : target.Current.dtype;
                    var t = empty(target.Current.shape, type).DetachFromDisposeScope();
                    data[i] = t;
                    file.ReadInto(plan[i].FileKey, t);
                }
            }
            try
            {
                Parallel.For(0, workers, new ParallelOptions { MaxDegreeOfParallelism = workers }, _ =>
                {
                    try { Work(); }
                    catch { failed.Cancel(); throw; }
                });
            }
            catch (AggregateException e)
            {
                var first = e.Flatten().InnerExceptions.FirstOrDefault(x => x is DreamBoothException) ?? e.Flatten().InnerExceptions[0];
                System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(first).Throw();
            }
            using var noGrad = no_grad();
            for (int i = 0; i < plan.Count; i++)
            {
                var target = plan[i].Target;
                if (target.IsParameter) Place(target, data[i]!);
                else target.Current.copy_(data[i]!); // persistent buffers (none in our models today) keep their storage
            }
        }
        finally
        {
            // the parameters hold their own handles to the storage
            foreach (var t in data) t?.Dispose();
        }
    }

    /// <summary>Replaces the owner's parameter by a new one over <paramref name="data"/> (the old one, meta or not, is disposed by the setter).</summary>
    static void Place(Slot slot, Tensor data)
    {
        var property = slot.Owner.GetType().GetProperty(slot.Name, BindingFlags.Public | BindingFlags.Instance);
        if (property is null || !property.CanWrite || !property.PropertyType.IsAssignableFrom(typeof(Parameter)))
            throw new InvalidOperationException($"{slot.Owner.GetType().Name}.{slot.Name}: no settable Parameter property to load into");
        // out of any dispose scope: not every setter detaches (TorchSharp's Embedding does not)
        var parameter = new Parameter(data, requires_grad: slot.Current.requires_grad);
        parameter.DetachFromDisposeScope();
        property.SetValue(slot.Owner, parameter);
    }

    /// <summary>Loads a diffusers-layout file into a module: same keys, strict, optional keys to skip; floats in <paramref name="dtype"/> (null: as built).</summary>
    public static void LoadStrict(nn.Module module, ITensorFile file, string component, IReadOnlySet<string>? ignore = null, ScalarType? dtype = null)
    {
        var targets = Targets(module);
        var plan = new List<Assignment>();
        var filled = new HashSet<string>(StringComparer.Ordinal);
        foreach (var key in file.Keys)
        {
            if (ignore?.Contains(key) == true) continue;
            if (!targets.TryGetValue(key, out var target))
                throw new DreamBoothException($"{file.Path}: unexpected key '{key}' for the {component}");
            plan.Add(new Assignment(key, target, Reshape: false, $"{component} '{key}'"));
            filled.Add(key);
        }
        foreach (var k in targets.Keys)
            if (!filled.Contains(k)) throw new DreamBoothException($"{file.Path}: missing key '{k}' for the {component}");
        Load(file, plan, dtype);
        EnsureMaterialized(module, component);
    }

    /// <summary>After a strict load no parameter may be left on the meta device (a guard: the missing-key check should have named it).</summary>
    public static void EnsureMaterialized(nn.Module module, string component)
    {
        foreach (var (name, p) in module.named_parameters())
            if (p.device_type == DeviceType.META)
                throw new InvalidOperationException($"{component} parameter '{name}' was not loaded (still on the meta device)");
    }
}
