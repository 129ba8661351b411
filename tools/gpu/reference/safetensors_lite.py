"""A small pure-Python reader/writer of the .safetensors format (8-byte little-endian header length, a JSON header of
{name: {dtype, shape, data_offsets}} plus optional __metadata__, then the raw little-endian tensor bytes).

Used by the reference scripts when the `safetensors` wheel (a Rust extension) is not installed, as on a Debian
machine with python3-torch 1.13; on the GPU machine the wheel is there and is used instead (common.load_file).
"""
import json
import struct

import torch

DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8, "BOOL": torch.bool,
}
NAMES = {v: k for k, v in DTYPES.items()}


def _read_header(f, path):
    raw = f.read(8)
    if len(raw) != 8:
        raise ValueError(f"{path}: shorter than a safetensors header")
    (n,) = struct.unpack("<Q", raw)
    if n > 100 * 1024 * 1024:
        raise ValueError(f"{path}: header of {n} bytes is implausible")
    return json.loads(f.read(n).decode("utf-8")), 8 + n


def load_file(path, device="cpu"):
    with open(path, "rb") as f:
        header, start = _read_header(f, path)
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        a, b = info["data_offsets"]
        dtype = DTYPES[info["dtype"]]
        buf = bytearray(data[a:b])
        t = torch.frombuffer(buf, dtype=dtype) if b > a else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone().to(device)
    return out


def metadata(path):
    with open(path, "rb") as f:
        header, _ = _read_header(f, path)
    return header.get("__metadata__", {})


def save_file(tensors, path, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)


class safe_open:  # noqa: N801 (the wheel's name)
    def __init__(self, path, framework="pt", device="cpu"):
        self._tensors = load_file(path, device)
        self._meta = metadata(path)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def keys(self):
        return list(self._tensors)

    def get_tensor(self, name):
        return self._tensors[name]

    def metadata(self):
        return self._meta
