#!/usr/bin/env python3
"""Reference fixtures for the parity tests (tests/DreamBooth.Tests/Parity).

Builds a tiny model of the SD 1.x architecture with diffusers' and transformers' own classes, randomises every
parameter (norm weights and biases too), and writes inputs and reference outputs as safetensors files under
tests/fixtures/parity/. Run it through tools/parity/regenerate.sh, which pins the library versions and the
environment (one thread, offline, fixed seeds) so the output is the same bytes on every run.

Everything here is reference computation with the libraries' public classes: no model math is written in this
file except the DreamBooth objective of diffusers' train_dreambooth.py (MSE, instance + w x prior), which the
training-step reference spells out because that script is not importable.
"""
import argparse
import contextlib
import copy
import gzip
import hashlib
import io
import json
import math
import os
import runpy
import shutil
import sys
import tempfile

# offline, and the libraries' caches inside the repository's git-ignored .cache (regenerate.sh sets these too)
_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
os.environ.setdefault("HF_HOME", os.path.join(_ROOT, ".cache", "parity", "hf-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

# torch documents that baddbmm ignores `input` when beta = 0, but torch 1.13's CPU kernel then scales its own
# uninitialised result buffer by 0, so NaN/inf left in freed memory leaks into the output (764 of 2000 small calls in
# a stress test here; none with beta = 1). diffusers' attention (Attention.get_attention_scores) calls it with beta = 0.
# beta = 1 on a zero input gives the documented result exactly (0 + alpha * batch1 @ batch2).
_baddbmm = torch.baddbmm


def _baddbmm_beta0_ignores_input(input, batch1, batch2, *, beta=1, alpha=1, out=None):
    if beta == 0:
        input, beta = torch.zeros_like(input), 1
    return _baddbmm(input, batch1, batch2, beta=beta, alpha=alpha, out=out)


torch.baddbmm = _baddbmm_beta0_ignores_input

import diffusers  # noqa: E402
import transformers  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.loaders import single_file_utils  # noqa: E402
from diffusers.models.attention_processor import Attention, AttnProcessor  # noqa: E402
from diffusers.models.embeddings import Timesteps  # noqa: E402
from diffusers.training_utils import EMAModel  # noqa: E402
from lion_pytorch import Lion  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer  # noqa: E402
from transformers.models.clip.tokenization_clip import bytes_to_unicode  # noqa: E402

if not transformers.utils.is_tokenizers_available():
    # Import plumbing, not math: without the `tokenizers` wheel (a Rust extension, not installable here) transformers
    # uses a stand-in AddedToken that lacks the real one's __str__ (its content), so special tokens would not resolve.
    from transformers import tokenization_utils_base as _tub
    _tub.AddedToken.__str__ = lambda self: self.content

ROOT = _ROOT
SEED = 20261130

# --------------------------------------------------------------------------------------------- configurations
# SD 1.x layout at toy width: 4 UNet levels (3 cross-attention + 1 plain, 2 resnets each, channels growing after the
# first level as SD's 320 -> 640), 4 VAE levels (factor 8), a 4-layer CLIP text tower. Every GroupNorm group spans
# several channels. Kept this small so the training-step reference (gradients, Lion state, EMA) stays a few MB.
CLIP_MERGES = 500  # the first merges of CLIP's own BPE: a 1014-token vocabulary

UNET_CONFIG = dict(
    sample_size=8,
    in_channels=4,
    out_channels=4,
    block_out_channels=(4, 8, 8, 8),
    layers_per_block=2,
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=32,
    attention_head_dim=2,
    norm_num_groups=2,
    norm_eps=1e-5,
    flip_sin_to_cos=True,
    freq_shift=0,
    downsample_padding=1,
    mid_block_scale_factor=1.0,
    act_fn="silu",
)

VAE_CONFIG = dict(
    in_channels=3,
    out_channels=3,
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    block_out_channels=(8, 16, 16, 16),
    layers_per_block=2,
    latent_channels=4,
    norm_num_groups=4,
    sample_size=32,
    scaling_factor=0.18215,
    act_fn="silu",
)

# runwayml/stable-diffusion-v1-5 scheduler/scheduler_config.json
SD15_SCHEDULER = {
    "_class_name": "PNDMScheduler",
    "_diffusers_version": "0.6.0",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
    "clip_sample": False,
}

SAMPLERS = {
    "DDIM": (DDIMScheduler, {}),
    "Euler": (EulerDiscreteScheduler, {}),
    "Euler a": (EulerAncestralDiscreteScheduler, {}),
    "DPM++ 2M": (DPMSolverMultistepScheduler, {}),
    "DPM++ 2M Karras": (DPMSolverMultistepScheduler, {"use_karras_sigmas": True}),
}

PROMPTS = [
    "a photo of ohwx man",
    "man",
    "",
    "a close-up portrait photo of ohwx man, 85mm, sharp focus, (detailed skin:1.2), it's 4K!",
    "photo of the man in a red jacket standing in the rain at night, city lights, bokeh",
]
LONG_PROMPT = ", ".join(["a photo of a smiling man with a beard and glasses in a park"] * 8)


# --------------------------------------------------------------------------------------------- helpers
def generator(offset):
    return torch.Generator().manual_seed(SEED + offset)


def randomize(module, offset):
    """Every parameter random, rounded to bf16 (stored exactly in bf16): affine norms around 1, weights ~ 1/sqrt(fan-in)."""
    g = generator(offset)
    norm_params = set()
    for _, m in module.named_modules():
        if isinstance(m, (torch.nn.GroupNorm, torch.nn.LayerNorm)):
            norm_params.update(id(p) for p in m.parameters(recurse=False))
    with torch.no_grad():
        for name, p in module.named_parameters():
            if id(p) in norm_params:
                v = 1.0 + (torch.rand(p.shape, generator=g) - 0.5) if name.endswith("weight") else 0.2 * torch.randn(p.shape, generator=g)
            elif p.dim() >= 2:
                v = torch.randn(p.shape, generator=g) / math.sqrt(p[0].numel())
            else:
                v = 0.1 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(torch.bfloat16).to(torch.float32))


def tiny_tokenizer_files(directory):
    """vocab.json + merges.txt of CLIP's BPE cut to its first CLIP_MERGES merges (same byte symbols, same order)."""
    with gzip.open(os.path.join(ROOT, "tests", "fixtures", "clip", "bpe_simple_vocab_16e6.txt.gz"), "rt", encoding="utf-8") as f:
        lines = f.read().split("\n")
    merges = lines[1:1 + CLIP_MERGES]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    assert len(set(vocab)) == len(vocab)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")
    return len(vocab)


def contiguous(tensors):
    return {k: v.detach().contiguous() for k, v in tensors.items()}


def write(out_dir, name, tensors, metadata=None):
    path = os.path.join(out_dir, name)
    meta = {"generator": "tools/parity/generate.py", "diffusers": diffusers.__version__, "transformers": transformers.__version__,
            "torch": torch.__version__}
    if metadata:
        meta.update({k: v if isinstance(v, str) else json.dumps(v, sort_keys=True) for k, v in metadata.items()})
    save_file(contiguous(tensors), path, metadata=meta)


def ids_for(tokenizer, prompts, padded=True):
    if padded:
        return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    return tokenizer(prompts, truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt").input_ids


def sd_scheduler(cls, extra=None):
    return cls.from_config({**SD15_SCHEDULER, **(extra or {})})


# --------------------------------------------------------------------------------------------- the model
def build_model(out_dir):
    tmp = tempfile.mkdtemp(prefix="parity-tok-")
    vocab_size = tiny_tokenizer_files(tmp)
    tokenizer = CLIPTokenizer(os.path.join(tmp, "vocab.json"), os.path.join(tmp, "merges.txt"), pad_token="<|endoftext|>", model_max_length=77)
    shutil.rmtree(tmp)

    text_config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=37, num_hidden_layers=4, num_attention_heads=4,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=32,
        bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1, pad_token_id=1)
    text_encoder = CLIPTextModel(text_config)
    unet = UNet2DConditionModel(**UNET_CONFIG)
    vae = AutoencoderKL(**VAE_CONFIG)
    randomize(text_encoder, 1)
    randomize(unet, 2)
    randomize(vae, 3)

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                   scheduler=sd_scheduler(PNDMScheduler), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    folder = os.path.join(out_dir, "tiny-sd")
    shutil.rmtree(folder, ignore_errors=True)
    for m in (text_encoder, unet, vae):
        m.to(torch.bfloat16)  # the weights are bf16 values: bf16 files hold them exactly
    pipe.save_pretrained(folder, safe_serialization=True)
    # SD 1.5's own scheduler_config.json (diffusers 0.27 would add "timestep_spacing": "leading", PNDM's default, which
    # from_config then hands to every other scheduler class; SD 1.5 files have no such key)
    with open(os.path.join(folder, "scheduler", "scheduler_config.json"), "w", encoding="utf-8") as f:
        json.dump(SD15_SCHEDULER, f, indent=2)
        f.write("\n")
    # reload what was written, in fp32: every reference below comes from the files the C# tests read
    pipe = StableDiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32, safety_checker=None,
                                                   requires_safety_checker=False)
    for m in (pipe.unet, pipe.vae):
        m.set_attn_processor(AttnProcessor())
    pipe.set_progress_bar_config(disable=True)
    for m in (pipe.text_encoder, pipe.unet, pipe.vae):
        m.eval()
    return pipe, folder


# --------------------------------------------------------------------------------------------- comparisons
@torch.no_grad()
def tokenizer_cases(pipe, out_dir):
    tok = pipe.tokenizer
    cases = []
    for p in PROMPTS + [LONG_PROMPT]:
        cases.append({
            "prompt": p,
            "ids": tok(p, add_special_tokens=False).input_ids,
            "padded": ids_for(tok, [p])[0].tolist(),
        })
    with open(os.path.join(out_dir, "tokenizer.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer": "transformers CLIPTokenizer (slow, no ftfy) over tiny-sd/tokenizer", "cases": cases}, f, indent=1, ensure_ascii=False)
        f.write("\n")


@torch.no_grad()
def clip_cases(pipe, out_dir):
    te, tok = pipe.text_encoder, pipe.tokenizer
    t = {}
    te64 = copy.deepcopy(te).double()
    cases = {
        "padded": ids_for(tok, PROMPTS[:3]),                      # [3, 77], EOS padding
        "unpadded": ids_for(tok, [PROMPTS[0]], padded=False),     # [1, 11]
        "unpadded_longer": ids_for(tok, [PROMPTS[4]], padded=False),  # [1, 33]: another length
        "truncated": ids_for(tok, [LONG_PROMPT]),                 # [1, 77]: BOS + 75 + EOS
    }
    for name, ids in cases.items():
        for suffix, model in (("", te), (".f64", te64)) if name in ("padded", "unpadded") else (("", te),):
            # transformers 4.33 builds CLIP's causal mask with torch.full(finfo(dtype).min) in the default dtype
            torch.set_default_dtype(torch.float64 if suffix else torch.float32)
            try:
                out = model(ids, output_hidden_states=True)
            finally:
                torch.set_default_dtype(torch.float32)
            hs = out.hidden_states
            t[f"{name}.last_hidden_state{suffix}"] = out.last_hidden_state
            t[f"{name}.clip_skip_2{suffix}"] = model.text_model.final_layer_norm(hs[-2])
            t[f"{name}.clip_skip_3{suffix}"] = model.text_model.final_layer_norm(hs[-3])
        t[f"{name}.input_ids"] = ids
        if name == "padded":
            for i, h in enumerate(hs):
                t[f"{name}.hidden_states.{i}"] = h
    write(out_dir, "clip.safetensors", t, {"cases": sorted(cases)})


def unet_inputs():
    g = generator(10)
    return {
        "batch2": (torch.randn(2, 4, 8, 8, generator=g), torch.tensor([0, 999]), torch.randn(2, 77, 32, generator=g)),
        "fractional": (torch.randn(3, 4, 8, 8, generator=g), torch.tensor([500.5, 1.25, 999.0]), torch.randn(3, 77, 32, generator=g)),
        "odd": (torch.randn(1, 4, 9, 7, generator=g), torch.tensor([261]), torch.randn(1, 77, 32, generator=g)),
        "context154": (torch.randn(2, 4, 8, 8, generator=g), torch.tensor([10, 700]), torch.randn(2, 154, 32, generator=g)),
        "context5": (torch.randn(2, 4, 6, 10, generator=g), torch.tensor([42, 42]), torch.randn(2, 5, 32, generator=g)),
    }


@torch.no_grad()
def unet_cases(pipe, out_dir):
    t = {}
    unet64 = copy.deepcopy(pipe.unet).double()
    for name, (x, ts, ctx) in unet_inputs().items():
        t[f"{name}.sample"], t[f"{name}.timestep"], t[f"{name}.encoder_hidden_states"] = x, ts, ctx
        t[f"{name}.out"] = pipe.unet(x, ts, encoder_hidden_states=ctx).sample
        t[f"{name}.out.f64"] = unet64(x.double(), ts, encoder_hidden_states=ctx.double()).sample
        t[f"{name}.time_proj"] = pipe.unet.time_proj(ts)  # sinusoidal features: fp32 in any model dtype
    # the SD 1.5 timestep features (320 channels): every frequency matters there, not just the 2 of the tiny UNet
    sd_t = torch.tensor([0.0, 1.0, 261.0, 500.5, 999.0])
    t["sd15_time_proj.timestep"] = sd_t
    t["sd15_time_proj.out"] = Timesteps(320, flip_sin_to_cos=True, downscale_freq_shift=0)(sd_t)
    write(out_dir, "unet.safetensors", t, {"cases": sorted(unet_inputs())})


@torch.no_grad()
def vae_cases(pipe, out_dir):
    vae = pipe.vae
    vae64 = copy.deepcopy(vae).double()
    for m in vae64.modules():
        if isinstance(m, Attention):
            m.upcast_softmax = False  # "upcast" to fp32 would be a downcast here: keep the float64 reference pure
    g = generator(20)
    t = {}
    images = torch.rand(2, 3, 32, 48, generator=g) * 2 - 1
    posterior = vae.encode(images).latent_dist
    t["encode.images"], t["encode.mean"], t["encode.logvar"] = images, posterior.mean, posterior.logvar
    posterior64 = vae64.encode(images.double()).latent_dist
    t["encode.mean.f64"], t["encode.logvar.f64"] = posterior64.mean, posterior64.logvar
    latents = torch.randn(3, 4, 4, 6, generator=g)
    t["decode.latents"] = latents
    t["decode.out"] = vae.decode(latents).sample
    t["decode.out.f64"] = vae64.decode(latents.double()).sample
    vae.enable_slicing()
    t["decode.sliced"] = vae.decode(latents).sample
    vae.disable_slicing()
    big = torch.randn(1, 4, 6, 10, generator=g)  # larger than one tile (sample_size 32 px = 4 latents)
    vae.enable_tiling()
    vae64.enable_tiling()
    t["tiled.latents"] = big
    t["tiled.out"] = vae.decode(big).sample
    t["tiled.out.f64"] = vae64.decode(big.double()).sample
    vae.disable_tiling()
    t["tiled.untiled"] = vae.decode(big).sample
    write(out_dir, "vae.safetensors", t, {"tile_sample_min_size": vae.tile_sample_min_size,
                                          "tile_latent_min_size": vae.tile_latent_min_size,
                                          "tile_overlap_factor": vae.tile_overlap_factor})


@torch.no_grad()
def scheduler_cases(pipe, out_dir):
    t = {}
    ddpm = sd_scheduler(DDPMScheduler)
    t["alphas_cumprod"] = ddpm.alphas_cumprod  # float32, as every diffusers scheduler computes it
    t["betas"] = ddpm.betas
    for name, (cls, extra) in SAMPLERS.items():
        for steps in (20, 40):
            s = sd_scheduler(cls, extra)
            s.set_timesteps(steps)
            t[f"{name}.{steps}.timesteps"] = s.timesteps
            if hasattr(s, "sigmas"):
                t[f"{name}.{steps}.sigmas"] = s.sigmas
            t[f"{name}.{steps}.init_noise_sigma"] = torch.tensor(float(s.init_noise_sigma))

    # whole sampling loops: fixed latents, CFG 7.5, two images with their own generators (ancestral noise)
    te, tok, unet = pipe.text_encoder, pipe.tokenizer, pipe.unet
    cond = te(ids_for(tok, [PROMPTS[0]]))[0]
    uncond = te(ids_for(tok, [""]))[0]
    context = torch.cat([uncond.expand(2, -1, -1), cond.expand(2, -1, -1)])
    t["loop.context"] = context
    seeds = [1234, 1235]
    noise = torch.cat([torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(s)) for s in seeds])
    t["loop.noise"] = noise
    for name, (cls, extra) in SAMPLERS.items():
        s = sd_scheduler(cls, extra)
        s.set_timesteps(20)
        gens = [torch.Generator().manual_seed(sd) for sd in seeds]
        for g in gens:  # the initial latents come from these generators first, as in the pipeline
            torch.randn((1, 4, 8, 8), generator=g)
        latents = noise * s.init_noise_sigma
        kwargs = {"generator": gens} if name in ("Euler", "Euler a") else {}
        for ts in s.timesteps:
            x = s.scale_model_input(torch.cat([latents] * 2), ts)
            eps = unet(x, ts, encoder_hidden_states=context).sample
            e_u, e_c = eps.chunk(2)
            latents = s.step(e_u + 7.5 * (e_c - e_u), ts, latents, **kwargs).prev_sample
        t[f"loop.{name}.final"] = latents
    write(out_dir, "schedulers.safetensors", t, {"samplers": list(SAMPLERS), "seeds": seeds, "steps": 20, "cfg": 7.5,
                                                 "prompt": PROMPTS[0], "negative": ""})


@torch.no_grad()
def rng_cases(out_dir):
    """CPU torch.randn / randint streams of seeded generators (the C# side must draw the same numbers)."""
    t = {}
    for seed in (0, 1234, 2**32 + 7):
        g = torch.Generator().manual_seed(seed)
        t[f"seed{seed}.randn_1x4x8x8"] = torch.randn((1, 4, 8, 8), generator=g)
        t[f"seed{seed}.randn_3x5"] = torch.randn((3, 5), generator=g)
        t[f"seed{seed}.randint_1000_x4"] = torch.randint(0, 1000, (4,), generator=g)
    write(out_dir, "rng.safetensors", t)


@torch.no_grad()
def pipeline_cases(pipe, out_dir):
    t = {}
    runs = {
        "dpmpp2m_karras": ("DPM++ 2M Karras", PROMPTS[3], "blurry, lowres", [1234, 1235], 64, 48),
        "euler_a": ("Euler a", PROMPTS[0], "", [7, 8], 48, 64),
        "ddim": ("DDIM", PROMPTS[4], "cartoon", [99], 40, 40),
    }
    meta = {}
    for key, (sampler, prompt, negative, seeds, width, height) in runs.items():
        cls, extra = SAMPLERS[sampler]
        pipe.scheduler = sd_scheduler(cls, extra)
        gens = [torch.Generator().manual_seed(s) for s in seeds]
        images = pipe(prompt=[prompt] * len(seeds), negative_prompt=[negative] * len(seeds), height=height, width=width,
                      num_inference_steps=20, guidance_scale=7.5, generator=gens, output_type="np").images
        images = torch.from_numpy(images)                               # [B, H, W, 3] in [0, 1], float32
        t[f"{key}.images"] = images
        t[f"{key}.uint8"] = (images * 255).round().to(torch.uint8)       # what numpy_to_pil saves
        meta[key] = {"sampler": sampler, "prompt": prompt, "negative": negative, "seeds": seeds, "width": width,
                     "height": height, "steps": 20, "cfg": 7.5}
    write(out_dir, "pipeline.safetensors", t, {"runs": meta})


# --------------------------------------------------------------------------------------------- checkpoints
def single_file_check(pipe, folder, out_dir):
    """diffusers' converter writes the A1111 file; diffusers' single-file converter must read it back exactly."""
    path = os.path.join(out_dir, "tiny-sd-a1111.safetensors")
    script = os.path.join(os.environ.get("PARITY_CACHE", os.path.join(ROOT, ".cache", "parity")), "src", "diffusers",
                          "scripts", "convert_diffusers_to_original_stable_diffusion.py")
    argv = sys.argv
    sys.argv = [script, "--model_path", folder, "--checkpoint_path", path, "--use_safetensors"]
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints every VAE attention rename
            runpy.run_path(script, run_name="__main__")
    finally:
        sys.argv = argv

    from safetensors.torch import load_file
    original = load_file(path)
    report = {}
    # the same file as our single-file save writes it: plus CLIP's position_ids (int64 [1, 77]), as original SD files have
    with_ids = dict(original)
    with_ids["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    for variant, checkpoint in (("diffusers_file", original), ("with_position_ids", with_ids)):
        ckpt = dict(checkpoint)
        unet_sd = single_file_utils.convert_ldm_unet_checkpoint(dict(ckpt), dict(pipe.unet.config))
        vae_sd = single_file_utils.convert_ldm_vae_checkpoint(dict(ckpt), dict(pipe.vae.config))
        clip_sd = {}
        for key, value in ckpt.items():  # create_text_encoder_from_ldm_clip_checkpoint's key rule
            for prefix in single_file_utils.LDM_CLIP_PREFIX_TO_REMOVE:
                if key.startswith(prefix):
                    clip_sd[key.replace(prefix, "")] = value
        # transformers >= 4.31 keeps position_ids out of the state dict (non-persistent): diffusers drops it as well
        clip_sd.pop("text_model.embeddings.position_ids", None)
        result = {}
        for component, converted, model in (("unet", unet_sd, pipe.unet), ("vae", vae_sd, pipe.vae), ("text_encoder", clip_sd, pipe.text_encoder)):
            expected = model.state_dict()
            missing = sorted(set(expected) - set(converted))
            unexpected = sorted(set(converted) - set(expected))
            mismatched = sorted(k for k in set(expected) & set(converted) if tuple(expected[k].shape) != tuple(converted[k].shape))
            unequal = sorted(k for k in set(expected) & set(converted)
                             if k not in mismatched and not torch.equal(expected[k], converted[k].to(expected[k].dtype)))
            result[component] = {"tensors": len(converted), "missing": missing, "unexpected": unexpected,
                                 "mismatched": mismatched, "not_bit_identical": unequal}
            if missing or unexpected or mismatched or unequal:
                raise SystemExit(f"single-file round trip failed for {variant}/{component}: {result[component]}")
        consumed = set()
        for key in checkpoint:
            if key.startswith(("model.diffusion_model.", "first_stage_model.", *single_file_utils.LDM_CLIP_PREFIX_TO_REMOVE)):
                consumed.add(key)
        result["keys_not_read"] = sorted(set(checkpoint) - consumed)
        report[variant] = result
    return report


def sd15_key_list(out_dir):
    """The key/shape list of a full-size SD 1.5 original checkpoint as diffusers' converter writes it (weights not initialised)."""
    saved = {}
    for cls in (torch.nn.Linear, torch.nn.Conv2d, torch.nn.Embedding, torch.nn.LayerNorm, torch.nn.GroupNorm):
        saved[cls] = cls.reset_parameters
        cls.reset_parameters = lambda self: None
    saved_init = transformers.modeling_utils.PreTrainedModel.post_init
    transformers.modeling_utils.PreTrainedModel.post_init = lambda self: None
    try:
        unet = UNet2DConditionModel(
            sample_size=64, cross_attention_dim=768, attention_head_dim=8, block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3, layers_per_block=2)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, latent_channels=4, layers_per_block=2, sample_size=512)
        # openai/clip-vit-large-patch14's text tower (runwayml/stable-diffusion-v1-5 text_encoder/config.json)
        te = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                          num_attention_heads=12, max_position_embeddings=77, hidden_act="quick_gelu",
                                          projection_dim=768))
    finally:
        for cls, fn in saved.items():
            cls.reset_parameters = fn
        transformers.modeling_utils.PreTrainedModel.post_init = saved_init
    with contextlib.redirect_stdout(io.StringIO()):
        script = runpy.run_path(os.path.join(os.environ.get("PARITY_CACHE", os.path.join(ROOT, ".cache", "parity")), "src", "diffusers",
                                             "scripts", "convert_diffusers_to_original_stable_diffusion.py"))
    keys = {}
    keys.update({"model.diffusion_model." + k: list(v.shape) for k, v in script["convert_unet_state_dict"](unet.state_dict()).items()})
    with contextlib.redirect_stdout(io.StringIO()):
        vae_keys = script["convert_vae_state_dict"](vae.state_dict())
    keys.update({"first_stage_model." + k: list(v.shape) for k, v in vae_keys.items()})
    keys.update({"cond_stage_model.transformer." + k: list(v.shape) for k, v in script["convert_text_enc_state_dict"](te.state_dict()).items()})
    diffusers_keys = {"unet": {k: list(v.shape) for k, v in unet.state_dict().items()},
                      "vae": {k: list(v.shape) for k, v in vae.state_dict().items()},
                      "text_encoder": {k: list(v.shape) for k, v in te.state_dict().items()}}
    with open(os.path.join(out_dir, "sd15-keys.json"), "w", encoding="utf-8") as f:
        json.dump({"source": "diffusers scripts/convert_diffusers_to_original_stable_diffusion.py (v0.27.2) over full-size SD 1.5 "
                             "UNet2DConditionModel / AutoencoderKL and transformers CLIPTextModel (v4.33.3)",
                   "original": dict(sorted(keys.items())),
                   "diffusers": {c: dict(sorted(d.items())) for c, d in diffusers_keys.items()}}, f, indent=0, sort_keys=False)
        f.write("\n")
    return len(keys)


# --------------------------------------------------------------------------------------------- one DreamBooth step
LR_UNET, LR_TE, WD_UNET, WD_TE, BETAS, PRIOR_WEIGHT, EMA_DECAY = 1e-4, 5e-5, 0.1, 0.01, (0.9, 0.99), 0.75, 0.9
MAX_GRAD_NORM = 1.0
TRAIN_PROMPTS = ["a photo of ohwx man", "ohwx man, close-up", "a photo of a man", "man"]
IS_CLASS = [False, False, True, True]


def train_step(pipe, out_dir):
    """diffusers train_dreambooth.py's step with prior preservation on fixed inputs, then clipping, a Lion step and an EMA update."""
    unet, te, tok = pipe.unet, pipe.text_encoder, pipe.tokenizer
    noise_scheduler = sd_scheduler(DDPMScheduler)
    g = generator(30)
    latents = torch.randn(4, 4, 8, 8, generator=g) * 0.8
    noise = torch.randn(4, 4, 8, 8, generator=g)
    timesteps = torch.tensor([17, 640, 999, 301])
    input_ids = ids_for(tok, TRAIN_PROMPTS)
    t = {"latents": latents, "noise": noise, "timesteps": timesteps, "input_ids": input_ids,
         "is_class": torch.tensor(IS_CLASS)}

    unet.train()
    te.train()
    unet_params = dict(unet.named_parameters())
    te_params = dict(te.named_parameters())
    for p in list(unet_params.values()) + list(te_params.values()):
        p.requires_grad_(True)
        p.grad = None
    ema = EMAModel(unet.parameters(), decay=EMA_DECAY, min_decay=EMA_DECAY, update_after_step=-1)  # a fixed decay

    # ---- train_dreambooth.py: noise, add_noise, predict, chunk instance/prior, MSE, loss = instance + w * prior
    noisy_latents = noise_scheduler.add_noise(latents, noise, timesteps)
    encoder_hidden_states = te(input_ids)[0]
    model_pred = unet(noisy_latents, timesteps, encoder_hidden_states).sample
    target = noise
    model_pred, model_pred_prior = torch.chunk(model_pred, 2, dim=0)
    target, target_prior = torch.chunk(target, 2, dim=0)
    instance_loss = torch.nn.functional.mse_loss(model_pred.float(), target.float(), reduction="mean")
    prior_loss = torch.nn.functional.mse_loss(model_pred_prior.float(), target_prior.float(), reduction="mean")
    loss = instance_loss + PRIOR_WEIGHT * prior_loss
    loss.backward()
    t["loss"], t["instance_loss"], t["prior_loss"] = loss.detach(), instance_loss.detach(), prior_loss.detach()
    t["noisy_latents"], t["encoder_hidden_states"] = noisy_latents.detach(), encoder_hidden_states.detach()

    # ---- Lion (lucidrains' lion-pytorch) over both groups, from a non-zero momentum so beta1 and beta2 both act
    opt = Lion([{"params": list(unet_params.values()), "lr": LR_UNET, "weight_decay": WD_UNET},
                {"params": list(te_params.values()), "lr": LR_TE, "weight_decay": WD_TE}], betas=BETAS)
    gm = generator(31)
    for group, params in (("unet", unet_params), ("text_encoder", te_params)):
        for name, p in params.items():
            t[f"grad.{group}.{name}"] = p.grad.detach().clone()
            m0 = (torch.randn(p.shape, generator=gm) * p.grad.std().clamp(min=1e-12)).to(torch.bfloat16)
            t[f"exp_avg0.{group}.{name}"] = m0
            opt.state[p]["exp_avg"] = m0.to(torch.float32)
    # the recipe's clipping: max_grad_norm 1 on the UNet (train_dreambooth: accelerator.clip_grad_norm_, i.e.
    # torch.nn.utils.clip_grad_norm_), none on the text encoder (text_encoder_max_grad_norm 0)
    t["grad_norm.unet"] = torch.nn.utils.clip_grad_norm_(list(unet_params.values()), MAX_GRAD_NORM)
    assert t["grad_norm.unet"] > MAX_GRAD_NORM, "the clipping would not act"
    opt.step()
    ema.step(unet.parameters())
    for group, params in (("unet", unet_params), ("text_encoder", te_params)):
        for name, p in params.items():
            t[f"param1.{group}.{name}"] = p.detach().clone()
            t[f"exp_avg1.{group}.{name}"] = opt.state[p]["exp_avg"].clone()
    for (name, _), shadow in zip(unet.named_parameters(), ema.shadow_params):
        t[f"ema1.unet.{name}"] = shadow.clone()
    write(out_dir, "train_step.safetensors", t, {
        "lr_unet": LR_UNET, "lr_text_encoder": LR_TE, "weight_decay_unet": WD_UNET, "weight_decay_text_encoder": WD_TE,
        "betas": list(BETAS), "prior_loss_weight": PRIOR_WEIGHT, "ema_decay": EMA_DECAY, "prompts": TRAIN_PROMPTS,
        "max_grad_norm_unet": MAX_GRAD_NORM, "max_grad_norm_text_encoder": 0.0,
        "lion": "lion-pytorch 0.2.3 Lion (update_fn), exp_avg preset to exp_avg0", "ema": "diffusers EMAModel, min_decay = decay"})


# --------------------------------------------------------------------------------------------- bf16
@torch.no_grad()
def bf16_cases(pipe, out_dir):
    t = {}
    x, ts, ctx = unet_inputs()["odd"]  # the best conditioned case: this tiny random UNet loses ~3% in bf16
    ids = ids_for(pipe.tokenizer, PROMPTS[:2])
    t["unet.sample"], t["unet.timestep"], t["unet.encoder_hidden_states"], t["clip.input_ids"] = x, ts, ctx, ids
    t["unet.fp32"] = pipe.unet(x, ts, encoder_hidden_states=ctx).sample
    t["clip.fp32"] = pipe.text_encoder(ids)[0]
    unet16 = pipe.unet.to(torch.bfloat16)
    te16 = pipe.text_encoder.to(torch.bfloat16)
    t["unet.bf16"] = unet16(x.to(torch.bfloat16), ts, encoder_hidden_states=ctx.to(torch.bfloat16)).sample
    t["clip.bf16"] = te16(ids)[0]
    pipe.unet.to(torch.float32)
    pipe.text_encoder.to(torch.float32)
    write(out_dir, "bf16.safetensors", t)


# --------------------------------------------------------------------------------------------- main
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "parity"))
    args = parser.parse_args()
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    torch.manual_seed(SEED)

    pipe, folder = build_model(out_dir)
    steps = [
        ("tokenizer", lambda: tokenizer_cases(pipe, out_dir)),
        ("clip", lambda: clip_cases(pipe, out_dir)),
        ("unet", lambda: unet_cases(pipe, out_dir)),
        ("vae", lambda: vae_cases(pipe, out_dir)),
        ("rng", lambda: rng_cases(out_dir)),
        ("schedulers", lambda: scheduler_cases(pipe, out_dir)),
        ("pipeline", lambda: pipeline_cases(pipe, out_dir)),
        ("bf16", lambda: bf16_cases(pipe, out_dir)),
    ]
    for name, fn in steps:
        print(f"[parity] {name}", flush=True)
        fn()
    print("[parity] single-file", flush=True)
    single_file = single_file_check(pipe, folder, out_dir)
    print("[parity] sd15 keys", flush=True)
    sd15 = sd15_key_list(out_dir)
    print("[parity] train step", flush=True)
    train_step(pipe, out_dir)  # last: it trains the reference model in place

    files = sorted(os.path.relpath(os.path.join(d, f), out_dir) for d, _, fs in os.walk(out_dir) for f in fs
                   if f not in ("manifest.json", "README.md"))
    manifest = {
        "generator": "tools/parity/generate.py via tools/parity/regenerate.sh",
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "transformers": transformers.__version__,
        "seed": SEED,
        "single_file_check": single_file,
        "sd15_original_keys": sd15,
        "sha256": {f: hashlib.sha256(open(os.path.join(out_dir, f), "rb").read()).hexdigest() for f in files},
    }
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    print(f"[parity] wrote {len(files)} files to {out_dir}")


if __name__ == "__main__":
    main()
