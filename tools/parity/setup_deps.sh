#!/usr/bin/env bash
# Puts the pinned sources the parity generator imports under .cache/parity/ (git-ignored; nothing fetched is committed):
#   diffusers v0.27.2, transformers v4.33.3, huggingface_hub v0.20.3 and lion-pytorch 0.2.3 (source trees only),
# plus site/: the import path (symlinks, version metadata, and our pure-Python safetensors reader/writer from
# tools/parity/shims). Each source comes from a local git repository when PARITY_GIT_<NAME> names one (a clone or a
# bare mirror that has the commit), else from GitHub (a depth-1 fetch of the exact commit).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="${PARITY_CACHE:-$ROOT/.cache/parity}"
mkdir -p "$CACHE/src" "$CACHE/git"

# name  env-suffix  url  commit  version  paths-in-archive  package-dir-in-archive
PINS=(
  "diffusers DIFFUSERS https://github.com/huggingface/diffusers b69fd990ad8026f21893499ab396d969b62bb8cc 0.27.2 src/diffusers,scripts/convert_diffusers_to_original_stable_diffusion.py src/diffusers"
  "transformers TRANSFORMERS https://github.com/huggingface/transformers bffac926ca6bc6c965a92bfbfd00c567a2c0fb90 4.33.3 src/transformers src/transformers"
  "huggingface_hub HUGGINGFACE_HUB https://github.com/huggingface/huggingface_hub 2cff405655a58e91e68d2486a3d699e25fadc65b 0.20.3 src/huggingface_hub src/huggingface_hub"
  "lion_pytorch LION_PYTORCH https://github.com/lucidrains/lion-pytorch 6a74fdc0ba572ab5683dc0270c66c20ecbc02d09 0.2.3 lion_pytorch lion_pytorch"
)

mkdir -p "$CACHE/site"
for pin in "${PINS[@]}"; do
  read -r name suffix url commit version paths pkg <<<"$pin"
  dest="$CACHE/src/$name"
  if [ ! -f "$dest/.commit" ] || [ "$(cat "$dest/.commit")" != "$commit" ]; then
    var="PARITY_GIT_$suffix"
    gitdir="${!var:-}"
    if [ -z "$gitdir" ]; then
      gitdir="$CACHE/git/$name"
      [ -d "$gitdir" ] || git init -q --bare "$gitdir"
      git --git-dir="$gitdir" cat-file -e "$commit^{commit}" 2>/dev/null || git --git-dir="$gitdir" fetch -q --depth 1 "$url" "$commit"
    fi
    rm -rf "$dest" && mkdir -p "$dest"
    git --git-dir="$gitdir" archive "$commit" ${paths//,/ } | tar -x -C "$dest"
    echo "$commit" >"$dest/.commit"
  fi
  ln -sfn "../src/$name/$pkg" "$CACHE/site/$name"
  rm -rf "$CACHE/site/$name"-*.dist-info
  mkdir -p "$CACHE/site/$name-$version.dist-info"
  printf 'Metadata-Version: 2.1\nName: %s\nVersion: %s\n' "$name" "$version" >"$CACHE/site/$name-$version.dist-info/METADATA"
done

# the safetensors wheel is a Rust extension (not installable here): a pure-Python reader/writer of the format stands in
ln -sfn "$ROOT/tools/parity/shims/safetensors" "$CACHE/site/safetensors"
rm -rf "$CACHE/site"/safetensors-*.dist-info
mkdir -p "$CACHE/site/safetensors-0.4.2.dist-info"
printf 'Metadata-Version: 2.1\nName: safetensors\nVersion: 0.4.2\n' >"$CACHE/site/safetensors-0.4.2.dist-info/METADATA"
echo "$CACHE/site"
