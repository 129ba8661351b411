#!/usr/bin/env python3
"""diffusers' side of `dreambooth bench train`: the DreamBooth step of diffusers' train_dreambooth.py (1 instance +
1 prior sample, cached latents, prior loss weight 1) with diffusers' UNet2DConditionModel and transformers'
CLIPTextModel in fp32 under PyTorch's autocast (bf16) — fp32 weights = masters, as accelerate's mixed_precision=bf16
does —, the Lion update (common.Lion, lucidrains' published rule) or bitsandbytes' AdamW8bit when it is installed,
and diffusers' EMAModel, for the same sizes, switches and step counts as ours. Timed the same way: warm-up steps,
then timed steps with no synchronisation but the last loss read; then --profile-steps steps with a synchronisation
after each phase (forward, backward, optimizer, EMA: host-issue vs device-done ms), and with --torch-profile one step
under torch.profiler (kernel time against host time, top kernels). One JSON line per case, `implementation: diffusers`,
with the same `case` string as ours.

  python3 train_ref.py (--model DIFFUSERS_DIR | --sd15 | --tiny) [--device cuda] [--dtype bf16] [--sizes 512x512,768x1024]
      [--train-text-encoder on|off|both] [--ema on|off|both] [--gradient-checkpointing on|off|both]
      [--optimizer lion[,adamw8bit]] [--steps 20] [--warmup 3] [--profile-steps 2] [--torch-profile] [--out FILE]
"""
import argparse
import contextlib
import sys
import time

import torch
import torch.nn.functional as F

import common
import flops


def switch(value, name):
    v = value.strip().lower()
    if v in ("on", "true", "yes"):
        return [True]
    if v in ("off", "false", "no"):
        return [False]
    if v == "both":
        return [True, False]
    common.fail(f"{name}: expected on, off or both, got '{value}'")


class PhaseTimer:
    """The same measurement as src/DreamBooth.Cli/Commands/Bench/PhaseTimer.cs."""

    def __init__(self, device):
        self.device, self.enabled, self.current, self.sums = device, False, None, {}

    def begin(self, name):
        if not self.enabled:
            return
        self.end()
        common.sync(self.device)
        self.current, self.start = name, time.perf_counter()

    def end(self):
        if not self.enabled or self.current is None:
            return
        host = (time.perf_counter() - self.start) * 1000
        common.sync(self.device)
        done = (time.perf_counter() - self.start) * 1000
        h, d, n = self.sums.get(self.current, (0.0, 0.0, 0))
        self.sums[self.current] = (h + host, d + done, n + 1)
        self.current = None

    def averages(self):
        return {k: {"host_ms": round(h / n, 3), "done_ms": round(d / n, 3), "steps": n} for k, (h, d, n) in self.sums.items()}


def make_models(args, device):
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel
    if args.model:
        m = common.sd_folder_modules(args.model, vae=False)
        return m["unet"].to(device), m["text_encoder"].to(device), m["unet"].config, {
            k: getattr(m["text_encoder"].config, k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "max_position_embeddings", "vocab_size")}
    ucfg, ccfg = (flops.TINY_UNET, flops.TINY_CLIP) if args.tiny else (flops.SD15_UNET, flops.SD15_CLIP)
    torch.manual_seed(1)
    unet = UNet2DConditionModel(**ucfg)
    te = CLIPTextModel(CLIPTextConfig(**ccfg))
    return unet.to(device), te.to(device), unet.config, dict(ccfg, vocab_size=te.config.vocab_size)


def torch_profile_summary(prof, device):
    events = prof.key_averages()
    use_cuda = device.type == "cuda"
    attr = "self_cuda_time_total" if use_cuda else "self_cpu_time_total"
    kernels = sorted(events, key=lambda e: getattr(e, attr, 0), reverse=True)[:10]
    total_device = sum(getattr(e, "self_cuda_time_total", 0) for e in events) / 1000 if use_cuda else None
    total_cpu = sum(e.self_cpu_time_total for e in events) / 1000
    launches = sum(e.count for e in events if e.key.startswith(("cudaLaunchKernel", "cuLaunchKernel"))) if use_cuda else None
    return {"device_kernel_ms": total_device, "host_cpu_ms": round(total_cpu, 3), "kernel_launches": launches,
            "top": [{"name": e.key[:120], "ms": round(getattr(e, attr, 0) / 1000, 3), "calls": e.count} for e in kernels]}


def run_case(args, device, dtype_name, width, height, te_on, ema_on, gc_on, opt_name, unet_cfg_holder):
    from diffusers import DDPMScheduler
    unet, te, ucfg, ccfg = make_models(args, device)
    unet_cfg_holder.append((ucfg, ccfg))
    factor = 8 if not args.tiny else 2
    if args.model:
        import json
        import os
        with open(os.path.join(args.model, "vae", "config.json")) as f:
            factor = 2 ** (len(json.load(f)["block_out_channels"]) - 1)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if dtype_name == "bf16" else contextlib.nullcontext()
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    unet.train()
    if gc_on:
        unet.enable_gradient_checkpointing()
    te.requires_grad_(te_on)
    te.train(te_on)
    if te_on and gc_on:
        te.gradient_checkpointing_enable()
    params = list(unet.parameters()) + (list(te.parameters()) if te_on else [])
    if opt_name == "lion":
        optimizer = common.Lion(params, lr=5e-7, weight_decay=1e-2)
    elif opt_name == "adamw8bit":
        try:
            import bitsandbytes as bnb
        except ImportError:
            return {"skipped": "bitsandbytes is not installed (no AdamW8bit reference)"}
        optimizer = bnb.optim.AdamW8bit(params, lr=5e-7, weight_decay=1e-2)
    else:
        common.fail(f"--optimizer: expected lion or adamw8bit, got '{opt_name}'")
    ema = None
    if ema_on:
        from diffusers.training_utils import EMAModel
        ema = EMAModel(unet.parameters(), decay=0.9999)
        ema.to(device)

    latents = torch.randn(2, ucfg.in_channels, height // factor, width // factor, device=device) * 0.18215
    ids = torch.randint(0, ccfg["vocab_size"] - 2, (2, 77), device=device)
    cached = None
    if not te_on:
        te.to(torch.bfloat16 if dtype_name == "bf16" else torch.float32)
        with torch.no_grad():
            cached = te(ids)[0]
    timer = PhaseTimer(device)

    def step():
        timer.begin("forward")
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (2,), device=device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            states = cached if cached is not None else te(ids)[0]
            pred = unet(noisy, timesteps, states).sample
        pred, pred_prior = pred.chunk(2)
        target, target_prior = noise.chunk(2)
        loss = F.mse_loss(pred.float(), target.float()) + 1.0 * F.mse_loss(pred_prior.float(), target_prior.float())
        timer.begin("backward")
        loss.backward()
        timer.begin("optimizer")
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            timer.begin("ema")
            ema.step(unet.parameters())
        timer.end()
        return loss.detach()

    with common.PeakMemory(device) as mem:
        for _ in range(args.warmup):
            step()
        common.sync(device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            loss = step()
        last_loss = loss.item()  # the one host read of the timed steps
        seconds = (time.perf_counter() - t0) / args.steps
        timer.enabled = True
        for _ in range(args.profile_steps):
            step()
        profile = None
        if args.torch_profile:
            timer.enabled = False
            acts = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
            with torch.profiler.profile(activities=acts) as prof:
                step()
                common.sync(device)
            profile = torch_profile_summary(prof, device)
    return {"seconds": seconds, "last_loss": last_loss, "memory": mem.result(),
            "phases_ms": timer.averages() if args.profile_steps else None, "torch_profile": profile,
            "attention": type(next(iter(unet.attn_processors.values()))).__name__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--model")
    g.add_argument("--sd15", action="store_true")
    g.add_argument("--tiny", action="store_true")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default=None, help="bf16 (autocast over fp32 weights; CUDA default) or fp32 (CPU default)")
    p.add_argument("--sizes", default=None)
    p.add_argument("--train-text-encoder", default="both")
    p.add_argument("--ema", default="both")
    p.add_argument("--gradient-checkpointing", default="both")
    p.add_argument("--optimizer", default="lion")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--profile-steps", type=int, default=2)
    p.add_argument("--torch-profile", action="store_true")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--out")
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or a.profile_steps < 0:
        common.fail("--steps must be at least 1, --warmup and --profile-steps at least 0")
    device = common.device_of(a.device)
    dname = a.dtype or ("bf16" if device.type == "cuda" else "fp32")
    if dname not in ("bf16", "fp32"):
        common.fail(f"--dtype: expected bf16 or fp32, got '{dname}'")
    sizes = [tuple(int(x) for x in s.lower().split("x")) for s in (a.sizes or ("64x64" if a.tiny else "512x512,768x1024")).split(",")]
    peak = a.peak_tflops
    if peak is None and device.type == "cuda":
        name = torch.cuda.get_device_name(device).upper()
        peak = 989 if ("H200" in name or ("H100" in name and "PCIE" not in name)) else 756 if "H100" in name else 312 if "A100" in name else None
    for (width, height) in sizes:
        for te_on in switch(a.train_text_encoder, "--train-text-encoder"):
            for ema_on in switch(a.ema, "--ema"):
                for gc_on in reversed(switch(a.gradient_checkpointing, "--gradient-checkpointing")):
                    for opt in [o.strip().lower() for o in a.optimizer.split(",") if o.strip()]:
                        case = f"{width}x{height} {'unet+te' if te_on else 'unet'} ema-{'on' if ema_on else 'off'} gc-{'on' if gc_on else 'off'} {opt} {dname}"
                        cfgs = []
                        r = run_case(a, device, dname, width, height, te_on, ema_on, gc_on, opt, cfgs)
                        record = dict(bench="train", implementation="diffusers", case=case, width=width, height=height,
                                      train_text_encoder=te_on, ema=ema_on, gradient_checkpointing=gc_on, optimizer=opt, dtype=dname,
                                      masters="fp32 weights under torch.autocast" if dname == "bf16" else "fp32",
                                      loop="diffusers train_dreambooth.py step: autocast UNet/TE, common.Lion, EMAModel",
                                      device=common.device_name(device))
                        if "skipped" in r:
                            record["skipped"] = r["skipped"]
                        else:
                            ucfg, ccfg = cfgs[0]
                            factor = 8 if not a.tiny else 2
                            tflop = flops.train_step_flops(dict(ucfg), ccfg, height // factor, width // factor, te_on) / 1e12
                            achieved = tflop / r["seconds"]
                            record.update(warmup_steps=a.warmup, steps=a.steps, it_per_s=round(1 / r["seconds"], 4),
                                          ms_per_step=round(r["seconds"] * 1000, 2), **r["memory"], step_tflop=tflop,
                                          achieved_tflops=round(achieved, 6 if a.tiny else 2), peak_bf16_tflops=peak,
                                          percent_of_peak=round(100 * achieved / peak, 1) if peak else None,
                                          profile_steps=a.profile_steps, phases_ms=r["phases_ms"], torch_profile=r["torch_profile"],
                                          last_loss=round(r["last_loss"], 5), attention=r["attention"])
                        record["versions"] = common.versions()
                        common.emit(record, a.out)
                        if device.type == "cuda":
                            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
