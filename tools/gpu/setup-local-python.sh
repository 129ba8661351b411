#!/usr/bin/env bash
# For testing the GPU kit's Python side HERE, on a CPU machine with Debian's python3-torch 1.13 (no PyPI): builds an
# import folder .cache/gpu-py/site (git-ignored; nothing fetched is committed) from local git snapshots of
#   diffusers v0.27.2 (the carried v0.40 needs torch >= 2.6), huggingface_hub v0.25.2, transformers (a 4.4x tree),
#   lion-pytorch (only to check our Lion against it)
# plus a `safetensors` package over tools/gpu/reference/safetensors_lite.py (the wheel is a Rust extension).
# The GPU machine does not use this: it has torch 2.11, transformers, huggingface_hub and safetensors, and gets
# diffusers from .gpu-carry/diffusers.tar.xz.
#   tools/gpu/setup-local-python.sh DIFFUSERS_GIT HUB_GIT TRANSFORMERS_GIT[@REF] [LION_GIT]
# prints the folder to put on PYTHONPATH (with tools/gpu/reference).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
site="$root/.cache/gpu-py/site"
[ $# -ge 3 ] || { echo "usage: $0 DIFFUSERS_GIT HUB_GIT TRANSFORMERS_GIT[@REF] [LION_GIT]" >&2; exit 2; }
rm -rf "$site" && mkdir -p "$site"
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
take() { # spec default-ref path-in-repo package-name version
  local src="${1%@*}" ref="$2"; [[ "$1" == *@* ]] && ref="${1##*@}"
  git -C "$src" archive "$ref" "$3" | tar -x -C "$tmp"
  mv "$tmp/$3" "$site/$4"
  mkdir -p "$site/$4-$5.dist-info"
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$4" "$5" > "$site/$4-$5.dist-info/METADATA"
}
take "$1" v0.27.2 src/diffusers diffusers 0.27.2
take "$2" v0.25.2 src/huggingface_hub huggingface_hub 0.25.2
tv="$(git -C "${3%@*}" show "$( [[ "$3" == *@* ]] && echo "${3##*@}" || echo HEAD ):src/transformers/__init__.py" | sed -n 's/^__version__ = "\(.*\)"/\1/p')"
take "$3" HEAD src/transformers transformers "${tv:-4.0.0}"
[ $# -ge 4 ] && take "$4" HEAD lion_pytorch lion_pytorch 0.2.3
mkdir -p "$site/safetensors" "$site/safetensors-0.4.2.dist-info"
printf 'Metadata-Version: 2.1\nName: safetensors\nVersion: 0.4.2\n' > "$site/safetensors-0.4.2.dist-info/METADATA"
cat > "$site/safetensors/__init__.py" <<'PY'
# local test stand-in for the safetensors wheel: tools/gpu/reference/safetensors_lite.py
from safetensors_lite import safe_open  # noqa: F401
class SafetensorError(Exception):
    pass
PY
cat > "$site/safetensors/torch.py" <<'PY'
from safetensors_lite import load_file, save_file  # noqa: F401
def storage_ptr(tensor):
    return tensor.storage().data_ptr() if tensor.device.type != "meta" else 0
def storage_size(tensor):
    return tensor.storage().nbytes() if tensor.device.type != "meta" else 0
PY
echo "$site"
