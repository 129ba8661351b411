"""What the reference scripts share: devices and dtypes, the NVML peak-memory sampler, JSON lines, safetensors I/O,
diffusers/transformers models from a diffusers folder (loaded strictly from its .safetensors), and the Lion update.

The scripts are ours (tools/gpu/reference); diffusers and transformers are imported as they are installed (on the GPU
machine: the carried diffusers snapshot and the machine's transformers). Nothing here is on the measured path of our
own implementation: it is the "diffusers eager" side of each comparison.
"""
import json
import os
import platform
import resource
import sys
import threading
import time

import torch

try:  # the wheel when installed (GPU machine), else our pure-Python reader/writer
    from safetensors.torch import load_file as _load_file, save_file as _save_file
    SAFETENSORS = "safetensors"
except ImportError:  # pragma: no cover - depends on the machine
    from safetensors_lite import load_file as _load_file, save_file as _save_file
    SAFETENSORS = "safetensors_lite"

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def load_file(path, device="cpu"):
    return _load_file(path, device=device)


def save_file(tensors, path, metadata=None):
    _save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, path, metadata=metadata)


def dtype_of(name):
    try:
        return DTYPES[name]
    except KeyError:
        raise SystemExit(f"error: dtype '{name}': expected one of {', '.join(DTYPES)}")


def device_of(name):
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    d = torch.device(name)
    if d.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {name}: CUDA is not available to this torch ({torch.__version__})")
    return d


def device_name(device):
    if device.type == "cuda":
        return f"{device} {torch.cuda.get_device_name(device)}"
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def versions():
    out = {"python": platform.python_version(), "torch": torch.__version__, "safetensors": SAFETENSORS}
    for mod in ("diffusers", "transformers", "huggingface_hub"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception as e:  # noqa: BLE001 - recorded, not fatal
            out[mod] = f"unavailable ({type(e).__name__})"
    return out


def emit(record, out=None):
    """Prints one JSON line (and appends it to `out` when given)."""
    line = json.dumps(record, sort_keys=False, default=str)
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


class PeakMemory:
    """Peak memory of one case. CUDA: device-wide used memory from NVML sampled every 5 ms (the same probe as our
    `bench` commands: it includes the CUDA context), plus torch's own allocator peaks. CPU: the process's peak RSS
    (ru_maxrss, not reset between cases)."""

    def __init__(self, device):
        self.device = device
        self.kind = "process_rss_peak_since_start"
        self._peak = -1
        self._stop = threading.Event()
        self._thread = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            self.kind = "gpu_used_peak_nvml"
            try:
                import pynvml
                pynvml.nvmlInit()
                handle = pynvml.nvmlDeviceGetHandleByIndex(device.index or 0)

                def run():
                    while not self._stop.is_set():
                        used = pynvml.nvmlDeviceGetMemoryInfo(handle).used
                        self._peak = max(self._peak, used)
                        time.sleep(0.005)
                self._thread = threading.Thread(target=run, daemon=True)
                self._thread.start()
            except Exception:  # noqa: BLE001 - no NVML: torch's figures only
                self.kind = "torch_max_reserved (no NVML)"

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join()
        return False

    def result(self):
        out = {"memory_kind": self.kind}
        if self.device.type == "cuda":
            out["peak_memory_mib"] = (self._peak >> 20) if self._peak >= 0 else torch.cuda.max_memory_reserved(self.device) >> 20
            out["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated(self.device) >> 20
            out["torch_max_reserved_mib"] = torch.cuda.max_memory_reserved(self.device) >> 20
        else:
            out["peak_memory_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
        return out


def load_component(cls, folder, weights, device="cpu"):
    """A diffusers/transformers module built from `folder/config.json` and loaded strictly from `folder/weights`."""
    with open(os.path.join(folder, "config.json")) as f:
        config = json.load(f)
    if hasattr(cls, "from_config"):  # diffusers
        module = cls.from_config(config)
    else:  # transformers
        config_cls = cls.config_class
        module = cls(config_cls(**{k: v for k, v in config.items() if not k.startswith("_")}))
    state = load_file(os.path.join(folder, weights))
    missing, unexpected = module.load_state_dict(state, strict=False)
    # transformers' CLIPTextModel keeps position_ids as a buffer in some versions and not in others
    missing = [k for k in missing if not k.endswith("position_ids")]
    unexpected = [k for k in unexpected if not k.endswith("position_ids")]
    if missing or unexpected:
        raise SystemExit(f"error: {folder}/{weights}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    return module.to(device).eval()


def sd_folder_modules(folder, device="cpu", unet=True, text_encoder=True, vae=True):
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextModel
    out = {}
    if unet:
        out["unet"] = load_component(UNet2DConditionModel, os.path.join(folder, "unet"), "diffusion_pytorch_model.safetensors", device)
    if text_encoder:
        out["text_encoder"] = load_component(CLIPTextModel, os.path.join(folder, "text_encoder"), "model.safetensors", device)
    if vae:
        out["vae"] = load_component(AutoencoderKL, os.path.join(folder, "vae"), "diffusion_pytorch_model.safetensors", device)
    return out


class Lion(torch.optim.Optimizer):
    """Lion as published by Chen et al. and implemented in lucidrains' lion-pytorch, written here from that rule:
        p ← p · (1 − lr·wd);  update = sign(β1·m + (1 − β1)·g);  p ← p − lr·update;  m ← β2·m + (1 − β2)·g
    (tools/gpu/reference/test_reference.py checks it step for step against lion_pytorch when that is importable)."""

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd, (b1, b2) = group["lr"], group["weight_decay"], group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - lr * wd)
                update = m.mul(b1).add(p.grad, alpha=1 - b1).sign_()
                p.add_(update, alpha=-lr)
                m.mul_(b2).add_(p.grad, alpha=1 - b2)


def rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10


def fail(message):
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)
