#!/usr/bin/env python3
"""Same weights, same inputs, same device: our UNet / text encoder / VAE (`dreambooth bench forward`) against
diffusers' UNet2DConditionModel and AutoencoderKL and transformers' CLIPTextModel, per dtype.

  prepare: python3 parity_fullsize.py prepare --model DIR --out inputs.safetensors [--batch 2] [--seed 7]
           writes the inputs `bench forward` reads (latents, two timesteps, text states, token ids, images, latents
           to decode), sized from DIR's configs.
  compare: python3 parity_fullsize.py compare --model DIR --inputs inputs.safetensors --ours ours.safetensors
           [--device cuda] [--dtypes fp32,fp16,bf16] [--out FILE]
           runs the reference in fp32 and in each dtype and prints one JSON line per component and dtype:
           ours vs the reference in the same dtype, and, below fp32, both against the fp32 reference (the
           precision's own noise floor: `ours_over_floor` near 1 means our low-precision error is the reference's).
"""
import argparse
import json
import os
import sys

import torch

import common


def configs(folder):
    def read(name):
        with open(os.path.join(folder, name, "config.json")) as f:
            return json.load(f)
    return read("unet"), read("text_encoder"), read("vae")


def prepare(a):
    unet, te, vae = configs(a.model)
    g = torch.Generator().manual_seed(a.seed)
    factor = 2 ** (len(vae["block_out_channels"]) - 1)
    size = unet.get("sample_size", 64)
    b = a.batch
    vocab = te.get("vocab_size", 49408)
    ids = torch.full((b, te.get("max_position_embeddings", 77)), vocab - 1, dtype=torch.int64)
    for i in range(b):
        n = 5 + 7 * i
        ids[i, 0] = vocab - 2  # <|startoftext|> is vocab-2 in CLIP's vocabulary
        ids[i, 1:1 + n] = torch.randint(0, vocab - 2, (n,), generator=g)
        ids[i, 1 + n:] = vocab - 1  # <|endoftext|>, padding as SD does
    timesteps = torch.linspace(10, 990, b)
    tensors = {
        "unet.sample": torch.randn(b, unet.get("in_channels", 4), size, size, generator=g),
        "unet.timestep": timesteps,
        "unet.encoder_hidden_states": torch.randn(b, te.get("max_position_embeddings", 77), unet["cross_attention_dim"], generator=g),
        "text_encoder.input_ids": ids,
        "vae.images": torch.rand(b, vae.get("in_channels", 3), size * factor, size * factor, generator=g) * 2 - 1,
        "vae.latents": torch.randn(b, vae.get("latent_channels", 4), size, size, generator=g),
    }
    common.save_file(tensors, a.out, {"producer": "tools/gpu/reference/parity_fullsize.py prepare", "seed": str(a.seed)})
    common.emit({"step": "parity_inputs", "path": a.out, "shapes": {k: list(v.shape) for k, v in tensors.items()}})
    return 0


def diff(x, ref):
    x, ref = x.double(), ref.double()
    d = (x - ref).abs()
    finite = bool(torch.isfinite(x).all())
    return {"max_abs": float(d.max()), "mean_abs": float(d.mean()), "ref_max_abs": float(ref.abs().max()),
            "rel": float(d.max() / ref.abs().max()) if float(ref.abs().max()) else float(d.max()), "finite": finite}


def compare(a):
    device = common.device_of(a.device)
    inputs = common.load_file(a.inputs)
    ours = common.load_file(a.ours)
    modules = common.sd_folder_modules(a.model)
    dtypes = [d.strip() for d in a.dtypes.split(",") if d.strip()]
    reference, failed = {}, {}
    for name in ["fp32"] + [d for d in dtypes if d != "fp32"]:
        dt = common.dtype_of(name)
        unet, te, vae = (modules[k].to(device, dt) for k in ("unet", "text_encoder", "vae"))
        x = {k: v.to(device) for k, v in inputs.items()}
        out = {}
        try:
            with torch.no_grad():
                if "unet.sample" in x:
                    out["unet"] = unet(x["unet.sample"].to(dt), x["unet.timestep"].float(), encoder_hidden_states=x["unet.encoder_hidden_states"].to(dt)).sample
                if "text_encoder.input_ids" in x:
                    out["text_encoder"] = te(x["text_encoder.input_ids"].long())[0]
                if "vae.images" in x:
                    dist = vae.encode(x["vae.images"].to(dt)).latent_dist
                    out["vae.mean"], out["vae.logvar"] = dist.mean, dist.logvar
                if "vae.latents" in x:
                    out["vae.decode"] = vae.decode(x["vae.latents"].to(dt)).sample
        except RuntimeError as e:  # e.g. fp16 matmul on an old torch's CPU: that dtype has no reference here
            failed[name] = f"{type(e).__name__}: {str(e)[:300]}"
            common.emit({"step": "parity_fullsize", "dtype": name, "reference_failed": failed[name], "device": common.device_name(device)}, a.out)
            if name == "fp32":
                return 1
            continue
        reference[name] = {k: v.float().cpu() for k, v in out.items()}
    for name in [d for d in dtypes if d in reference]:
        for key, ref in reference[name].items():
            ours_key = f"{name}.{key}"
            record = {"step": "parity_fullsize", "component": key, "dtype": name, "device": common.device_name(device), "model": a.model}
            if ours_key not in ours:
                record["missing"] = f"{ours_key} is not in {a.ours}"
            else:
                mine = ours[ours_key].float()
                record["ours_vs_reference"] = diff(mine, ref)
                if name != "fp32":
                    record["ours_vs_fp32_reference"] = diff(mine, reference["fp32"][key])
                    record["reference_vs_fp32_reference"] = diff(ref, reference["fp32"][key])
                    floor = record["reference_vs_fp32_reference"]["max_abs"]
                    record["ours_over_floor"] = record["ours_vs_fp32_reference"]["max_abs"] / floor if floor else None
            record["versions"] = common.versions()
            common.emit(record, a.out)
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    pp = sub.add_parser("prepare")
    pp.add_argument("--model", required=True)
    pp.add_argument("--out", required=True)
    pp.add_argument("--batch", type=int, default=2)
    pp.add_argument("--seed", type=int, default=7)
    pc = sub.add_parser("compare")
    pc.add_argument("--model", required=True)
    pc.add_argument("--inputs", required=True)
    pc.add_argument("--ours", required=True)
    pc.add_argument("--device", default="auto")
    pc.add_argument("--dtypes", default="fp32,fp16,bf16")
    pc.add_argument("--out")
    a = p.parse_args(argv)
    return prepare(a) if a.cmd == "prepare" else compare(a)


if __name__ == "__main__":
    sys.exit(main())
