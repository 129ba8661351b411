#!/usr/bin/env python3
"""diffusers' side of `dreambooth bench sample`: StableDiffusionPipeline's denoising loop (CFG: the UNet runs on the
unconditional and the conditional half in one batch of 2 x batch latents, EulerDiscreteScheduler) with diffusers'
UNet2DConditionModel and transformers' CLIPTextModel, eager, on the same sizes, batches, steps and dtype.

it/s is timed the way ours is: a synchronisation after every step, steps 2..n (the first step also encodes the
prompts and draws the noise); images/s end to end includes encoding, the loop and the VAE decode (fp32, as ours).
One JSON line per case, `implementation: diffusers`, with the same `case` string as ours so lines pair up.

  python3 sample_ref.py (--model DIFFUSERS_DIR | --sd15 | --tiny) [--device cuda] [--dtype fp16] [--sizes 512x512,768x1024]
                        [--batches 1,8] [--steps 20] [--cfg 7.5] [--out FILE]
"""
import argparse
import sys
import time

import torch

import common
import flops


def build(args, device, dtype):
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    if args.model:
        m = common.sd_folder_modules(args.model)
        unet, te, vae = m["unet"], m["text_encoder"], m["vae"]
        model = args.model
    else:
        torch.manual_seed(1)
        ucfg, ccfg = (flops.TINY_UNET, flops.TINY_CLIP) if args.tiny else (flops.SD15_UNET, flops.SD15_CLIP)
        unet = UNet2DConditionModel(**ucfg)
        te = CLIPTextModel(CLIPTextConfig(**ccfg))
        vcfg = dict(block_out_channels=[32, 64], layers_per_block=1, latent_channels=4, norm_num_groups=32,
                    down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2) if args.tiny else dict(
            block_out_channels=[128, 256, 512, 512], layers_per_block=2, latent_channels=4,
            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4)
        vae = AutoencoderKL(**vcfg)
        model = "tiny-random" if args.tiny else "sd15-random"
    scheduler = EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000,
                                       steps_offset=1, timestep_spacing="leading")
    return unet.to(device, dtype).eval(), te.to(device, dtype).eval(), vae.to(device, torch.float32).eval(), scheduler, model


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model")
    g.add_argument("--sd15", action="store_true")
    g.add_argument("--tiny", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="UNet and text encoder dtype (default fp16 on CUDA, fp32 on CPU)")
    p.add_argument("--sizes", default=None)
    p.add_argument("--batches", default="1,8")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cfg", type=float, default=7.5)
    p.add_argument("--out")
    a = p.parse_args(argv)
    if a.steps < 2:
        common.fail("--steps: expected at least 2 (the first step is not timed)")
    device = common.device_of(a.device)
    dname = a.dtype or ("fp16" if device.type == "cuda" else "fp32")
    dtype = common.dtype_of(dname)
    sizes = [tuple(int(x) for x in s.lower().split("x")) for s in (a.sizes or ("64x64" if a.tiny else "512x512,768x1024")).split(",")]
    batches = [int(b) for b in a.batches.split(",")]
    unet, te, vae, scheduler, model = build(a, device, dtype)
    vae_factor = 2 ** (len(vae.config.block_out_channels) - 1)
    processor = type(next(iter(unet.attn_processors.values()))).__name__ if hasattr(unet, "attn_processors") else "?"
    vocab = te.config.vocab_size

    for (width, height) in sizes:
        for batch in batches:
            torch.manual_seed(1)
            ids = torch.randint(0, vocab - 2, (2 * batch, 77)).to(device)

            def generate(steps, stamps):
                t0 = time.perf_counter()
                with torch.no_grad():
                    emb = te(ids)[0]
                    latents = torch.randn(batch, unet.config.in_channels, height // vae_factor, width // vae_factor,
                                          device=device, dtype=torch.float32) * 1.0
                    scheduler.set_timesteps(steps, device=device)
                    latents = latents * scheduler.init_noise_sigma
                    for t in scheduler.timesteps:
                        x = torch.cat([latents] * 2)
                        x = scheduler.scale_model_input(x, t)
                        pred = unet(x.to(dtype), t, encoder_hidden_states=emb).sample
                        uncond, cond = pred.float().chunk(2)
                        guided = uncond + a.cfg * (cond - uncond)
                        latents = scheduler.step(guided, t, latents).prev_sample
                        common.sync(device)
                        stamps.append(time.perf_counter() - t0)
                    images = vae.decode(latents / 0.18215).sample
                    images = ((images / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu()
                common.sync(device)
                return time.perf_counter() - t0, images

            generate(2, [])  # warm-up: allocator, kernels, the VAE decode at this size
            with common.PeakMemory(device) as mem:
                stamps = []
                total, images = generate(a.steps, stamps)
            loop = stamps[-1] - stamps[0]
            it = (a.steps - 1) / loop
            common.emit(dict(
                bench="sample", implementation="diffusers", case=f"{width}x{height} b{batch} cfg{a.cfg:g} {dname}",
                model=model, width=width, height=height, batch=batch, steps=a.steps, cfg=a.cfg, sampler="Euler (EulerDiscreteScheduler)",
                unet_batch=2 * batch if a.cfg != 1.0 else batch, it_per_s=round(it, 4), s_per_it=round(1 / it, 4),
                images_per_s=round(batch / total, 4), images_per_min=round(60 * batch / total, 2), seconds_total=round(total, 3),
                **mem.result(), device=common.device_name(device), dtype=dname, vae_dtype="fp32", attention=processor,
                loop="diffusers StableDiffusionPipeline denoising loop, eager", versions=common.versions(),
            ), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
