"""A pure-Python reader/writer of the safetensors file format, for the parity generator only.

The `safetensors` wheel (a Rust extension) is not installable here; diffusers and transformers import it
for file I/O only. This module implements the documented format (8-byte little-endian header length, a JSON
header of {name: {dtype, shape, data_offsets}} plus optional "__metadata__", then the raw little-endian data)
with the functions those libraries call: safe_open, and torch.load_file / save_file / load / save.
No tensor math happens here.
"""
import json
import struct

__version__ = "0.4.2"

_DTYPES = None


def _dtypes():
    global _DTYPES
    if _DTYPES is None:
        import torch
        _DTYPES = {
            "F64": (torch.float64, torch.int64, 8),
            "F32": (torch.float32, torch.int32, 4),
            "F16": (torch.float16, torch.int16, 2),
            "BF16": (torch.bfloat16, torch.int16, 2),
            "I64": (torch.int64, torch.int64, 8),
            "I32": (torch.int32, torch.int32, 4),
            "I16": (torch.int16, torch.int16, 2),
            "I8": (torch.int8, torch.int8, 1),
            "U8": (torch.uint8, torch.uint8, 1),
            "BOOL": (torch.bool, torch.uint8, 1),
        }
    return _DTYPES


class SafetensorError(Exception):
    pass


def _parse(data):
    if len(data) < 8:
        raise SafetensorError("file too small")
    (n,) = struct.unpack("<Q", data[:8])
    if 8 + n > len(data):
        raise SafetensorError("header length exceeds file")
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None)
    return header, meta, 8 + n


def _tensor(info, data, start):
    import torch
    dtype, _, size = _dtypes()[info["dtype"]]
    b, e = info["data_offsets"]
    shape = info["shape"]
    count = 1
    for s in shape:
        count *= s
    if e - b != count * size:
        raise SafetensorError(f"data_offsets {b}..{e} do not fit shape {shape} of {info['dtype']}")
    raw = bytearray(data[start + b:start + e])
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    if info["dtype"] == "BOOL":
        return torch.frombuffer(raw, dtype=torch.uint8).to(torch.bool).reshape(shape)
    return torch.frombuffer(raw, dtype=dtype).reshape(shape).clone()


class safe_open:
    """Context manager mirroring safetensors.safe_open (framework "pt" only)."""

    def __init__(self, filename, framework="pt", device="cpu"):
        if framework not in ("pt", "torch"):
            raise SafetensorError(f"framework {framework!r} is not supported by this reader")
        with open(filename, "rb") as f:
            self._data = f.read()
        self._header, self._meta, self._start = _parse(self._data)
        self._device = device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def keys(self):
        return list(self._header.keys())

    def metadata(self):
        return self._meta

    def get_tensor(self, name):
        t = _tensor(self._header[name], self._data, self._start)
        return t if self._device in ("cpu", None) else t.to(self._device)

    def get_slice(self, name):
        return _Slice(self.get_tensor(name))


class _Slice:
    def __init__(self, tensor):
        self._t = tensor

    def get_shape(self):
        return list(self._t.shape)

    def get_dtype(self):
        for k, (dt, _, _) in _dtypes().items():
            if dt == self._t.dtype:
                return k
        raise SafetensorError(str(self._t.dtype))

    def __getitem__(self, index):
        return self._t[index]
