"""torch helpers of the pure-Python safetensors shim (see __init__)."""
import json
import struct

from . import SafetensorError, _dtypes, _parse, _tensor


def load(data):
    header, _, start = _parse(data)
    return {k: _tensor(v, data, start) for k, v in header.items()}


def load_file(filename, device="cpu"):
    with open(filename, "rb") as f:
        data = f.read()
    out = load(data)
    if device not in ("cpu", None):
        out = {k: v.to(device) for k, v in out.items()}
    return out


def _name(dtype):
    for k, (dt, _, _) in _dtypes().items():
        if dt == dtype:
            return k
    raise SafetensorError(f"dtype {dtype} is not supported")


def save(tensors, metadata=None):
    import torch
    # data laid out by dtype size (largest first), then name: every tensor stays aligned
    names = sorted(tensors, key=lambda k: (-_dtypes()[_name(tensors[k].dtype)][2], k))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    chunks = []
    offset = 0
    for k in names:
        t = tensors[k].detach().to("cpu").contiguous()
        code = _name(t.dtype)
        _, int_view, size = _dtypes()[code]
        if t.dtype == torch.bool:
            raw = t.to(torch.uint8).numpy().tobytes()
        elif t.numel() == 0:
            raw = b""
        else:
            raw = t.view(int_view).numpy().tobytes() if int_view != t.dtype else t.numpy().tobytes()
        header[k] = {"dtype": code, "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(chunks)


def save_file(tensors, filename, metadata=None):
    data = save(tensors, metadata)
    with open(filename, "wb") as f:
        f.write(data)


def storage_ptr(tensor):
    """Address of the tensor's storage (transformers uses it to find tied weights)."""
    try:
        return tensor.untyped_storage().data_ptr()
    except (AttributeError, NotImplementedError):
        return tensor.storage().data_ptr()


def storage_size(tensor):
    """Bytes of the tensor's storage."""
    try:
        return tensor.untyped_storage().nbytes()
    except (AttributeError, NotImplementedError):
        return tensor.storage().size() * tensor.element_size()
