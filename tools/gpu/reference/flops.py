#!/usr/bin/env python3
"""Model FLOPs of the SD1.x UNet and CLIP text encoder, two ways:

1. `unet_forward_macs(config, h, w)`: the per-block formula (convolutions and matrix products, attention's QKᵀ and AV
   included, 1 MAC = 2 FLOP), the Python statement of src/DreamBooth.Cli/Commands/Bench/FlopCount.cs;
2. `measured_forward_flops(module, *inputs)`: what PyTorch itself counts while diffusers' module runs
   (torch.utils.flop_counter.FlopCounterMode on torch >= 2.1, the profiler's with_flops on older torch).

`python3 flops.py [--model DIR | --tiny | --sd15] [--size 64x64]` prints both as a JSON line, so the formula that
`bench train` divides by is checked against PyTorch's own count on the real module (on the GPU machine for SD1.5).
"""
import argparse
import json
import os
import sys

import torch

SD15_UNET = {
    "block_out_channels": [320, 640, 1280, 1280], "layers_per_block": 2, "cross_attention_dim": 768,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": 8, "in_channels": 4, "out_channels": 4, "sample_size": 64, "norm_num_groups": 32,
}
# the same values as UNet2DConditionConfig.Tiny / CLIPTextConfig.Tiny of the C# library
TINY_UNET = {
    "block_out_channels": [32, 64], "layers_per_block": 1, "cross_attention_dim": 32,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"], "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
    "attention_head_dim": 8, "in_channels": 4, "out_channels": 4, "sample_size": 8, "norm_num_groups": 32,
}
SD15_CLIP = {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12, "max_position_embeddings": 77}
TINY_CLIP = {"hidden_size": 32, "intermediate_size": 37, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77}


def unet_forward_macs(c, h, w, context=77):
    boc, lpb, dc = c["block_out_channels"], c["layers_per_block"], c["cross_attention_dim"]
    n, temb = len(boc), 4 * boc[0]

    def conv(k, ci, co, hh, ww):
        return k * k * ci * co * hh * ww

    def resnet(ci, co, hh, ww):
        return conv(3, ci, co, hh, ww) + temb * co + conv(3, co, co, hh, ww) + (conv(1, ci, co, hh, ww) if ci != co else 0)

    def transformer(ch, hh, ww):
        t = hh * ww
        return (ch * ch * t) + (4 * ch * ch * t + 2 * t * t * ch) + (2 * ch * ch * t + 2 * dc * ch * context + 2 * t * context * ch) \
            + (ch * 8 * ch * t + 4 * ch * ch * t) + (ch * ch * t)

    macs = conv(3, c.get("in_channels", 4), boc[0], h, w) + boc[0] * temb + temb * temb
    hh, ww, out = h, w, boc[0]
    for i in range(n):
        inp, out = out, boc[i]
        for j in range(lpb):
            macs += resnet(inp if j == 0 else out, out, hh, ww)
            if c["down_block_types"][i] == "CrossAttnDownBlock2D":
                macs += transformer(out, hh, ww)
        if i < n - 1:
            hh, ww = -(-hh // 2), -(-ww // 2)
            macs += conv(3, out, out, hh, ww)
    macs += 2 * resnet(boc[-1], boc[-1], hh, ww) + transformer(boc[-1], hh, ww)
    rev = list(reversed(boc))
    up = rev[0]
    for i in range(n):
        prev, up, inp = up, rev[i], rev[min(i + 1, n - 1)]
        for j in range(lpb + 1):
            skip = inp if j == lpb else up
            macs += resnet((prev if j == 0 else up) + skip, up, hh, ww)
            if c["up_block_types"][i] == "CrossAttnUpBlock2D":
                macs += transformer(up, hh, ww)
        if i < n - 1:
            hh, ww = hh * 2, ww * 2
            macs += conv(3, up, up, hh, ww)
    return macs + conv(3, boc[0], c.get("out_channels", 4), h, w)


def clip_forward_macs(c, tokens=77):
    d, i = c["hidden_size"], c["intermediate_size"]
    return c["num_hidden_layers"] * (4 * d * d * tokens + 2 * tokens * tokens * d + 2 * d * i * tokens)


def train_step_flops(unet_cfg, clip_cfg, h, w, train_text_encoder, samples=2):
    """3 forwards (forward + backward) of 2 samples; the text encoder's when it is trained. No GC recompute."""
    te = 2 * clip_forward_macs(clip_cfg, clip_cfg.get("max_position_embeddings", 77)) * 3 * samples if train_text_encoder else 0
    return 2 * unet_forward_macs(unet_cfg, h, w, clip_cfg.get("max_position_embeddings", 77)) * 3 * samples + te


def measured_forward_flops(module, *args, **kwargs):
    """FLOPs PyTorch counts for one forward (no_grad), and which counter counted them."""
    with torch.no_grad():
        try:
            from torch.utils.flop_counter import FlopCounterMode
            counter = FlopCounterMode(display=False)
            with counter:
                module(*args, **kwargs)
            return counter.get_total_flops(), "torch.utils.flop_counter.FlopCounterMode"
        except ImportError:
            with torch.profiler.profile(with_flops=True, activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
                module(*args, **kwargs)
            return sum(e.flops for e in prof.key_averages() if e.flops), "torch.profiler with_flops (aten mm/addmm/bmm/conv only)"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--model", help="a diffusers folder (its unet/config.json)")
    g.add_argument("--tiny", action="store_true", help="the tiny config of the C# library")
    p.add_argument("--size", default="64x64", help="latent WIDTHxHEIGHT (the image is 8x that)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--formula-only", action="store_true", help="skip building the module")
    a = p.parse_args(argv)
    w, h = (int(x) for x in a.size.lower().split("x"))
    if a.model:
        with open(os.path.join(a.model, "unet", "config.json")) as f:
            cfg = json.load(f)
        name = a.model
    else:
        cfg, name = (TINY_UNET, "tiny") if a.tiny else (SD15_UNET, "sd15")
    record = {"step": "flops", "model": name, "latent": [h, w], "formula_macs": unet_forward_macs(cfg, h, w)}
    record["formula_tflop"] = 2 * record["formula_macs"] / 1e12
    if not a.formula_only:
        from diffusers import UNet2DConditionModel
        device = torch.device(a.device)
        unet = UNet2DConditionModel(**{k: v for k, v in cfg.items() if not k.startswith("_")}).to(device).eval()
        x = torch.randn(1, cfg.get("in_channels", 4), h, w, device=device)
        ctx = torch.randn(1, 77, cfg["cross_attention_dim"], device=device)
        flops, counter = measured_forward_flops(unet, x, torch.tensor([10.0], device=device), encoder_hidden_states=ctx)
        record.update(measured_flops=flops, measured_tflop=flops / 1e12, counter=counter,
                      formula_over_measured=(2 * record["formula_macs"] / flops) if flops else None)
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
