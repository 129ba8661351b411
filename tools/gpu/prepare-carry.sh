#!/usr/bin/env bash
# Prepares what a GPU machine without .NET, diffusers or network needs for tools/gpu/visit.sh, in the git-ignored
# folder .gpu-carry/ of the repository (name it in the device tool's `carry`; it travels with the working tree):
#   app.tar.xz          app/: the Release build of the `dreambooth` CLI and of the test assembly (its own runner:
#                       tests/DreamBooth.Tests/SelfHost), WITHOUT libtorch natives (they come from the machine's
#                       PyTorch via DREAMBOOTH_LIBTORCH); dotnet/: the .NET runtime to run them (no SDK)
#   diffusers.tar.xz    the pure-Python `diffusers` package from a snapshot of huggingface/diffusers at a tag
#   torchsharp-native.tar.xz  TorchSharp's native sources (src/Native) at the 0.107.0 release, for the rebuild path
#   manifest.json       versions, commits, sizes, sha256 of each file
# and checks that the working tree plus .gpu-carry/ stays within the 64 MiB the device tool sends.
#
#   tools/gpu/prepare-carry.sh --diffusers GIT_OR_DIR[@REF] --torchsharp GIT_OR_DIR[@REF] [--skip-publish] [--limit-mib 64]
#   (--skip-publish keeps an existing app.tar.xz and repacks only the sources; --xz-level 1 packs fast for a dry run)
#
# GIT_OR_DIR is a git repository (bare or not; REF a tag or commit, default HEAD) or a plain folder holding
# src/diffusers (resp. src/Native). Nothing fetched is committed: .gpu-carry/ is ignored.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
carry="$root/.gpu-carry"
limit_mib=64 xz_level=9
diffusers="" torchsharp="" skip_publish=0
stage="${DREAMBOOTH_GPU_STAGE:-${TMPDIR:-/tmp}/dreambooth-gpu-stage}"
while [ $# -gt 0 ]; do
  case "$1" in
    --diffusers) diffusers="$2"; shift 2 ;;
    --torchsharp) torchsharp="$2"; shift 2 ;;
    --skip-publish) skip_publish=1; shift ;;
    --limit-mib) limit_mib="$2"; shift 2 ;;
    --xz-level) xz_level="$2"; shift 2 ;;
    --stage) stage="$2"; shift 2 ;;
    *) echo "prepare-carry: unknown argument '$1' (see the header of $0)" >&2; exit 2 ;;
  esac
done
[ -n "$diffusers" ] || { echo "prepare-carry: --diffusers GIT_OR_DIR[@REF] is required (a snapshot of huggingface/diffusers)" >&2; exit 2; }
[ -n "$torchsharp" ] || { echo "prepare-carry: --torchsharp GIT_OR_DIR[@REF] is required (a snapshot of dotnet/TorchSharp at 0.107.0)" >&2; exit 2; }
mkdir -p "$carry"
log() { echo "prepare-carry: $*" >&2; }

# --- pack one subfolder of a snapshot (git repo at a ref, or a plain folder) as NAME.tar.xz ---------------
# prints "commit" (or "dir") for the manifest
pack_snapshot() { # spec subdir strip-prefix out.tar.xz
  local spec="$1" sub="$2" strip="$3" out="$4" src ref tmp
  src="${spec%@*}"; ref="HEAD"; [[ "$spec" == *@* ]] && ref="${spec##*@}"
  tmp="$(mktemp -d)"
  if git -C "$src" rev-parse --git-dir >/dev/null 2>&1; then
    local commit
    commit="$(git -C "$src" rev-parse "$ref^{commit}")" || { log "$src: no ref '$ref'"; exit 2; }
    git -C "$src" archive --format=tar "$commit" "$sub" | tar -x -C "$tmp"
    echo "$commit" > "$tmp/.commit"
  else
    [ -d "$src/$sub" ] || { log "$src: no folder $sub"; exit 2; }
    mkdir -p "$tmp/$(dirname "$sub")"; cp -r "$src/$sub" "$tmp/$sub"
    echo "dir:$src" > "$tmp/.commit"
  fi
  [ -d "$tmp/$sub" ] || { log "$spec: $sub is empty at $ref"; exit 2; }
  tar -C "$tmp/$strip" -cf - "${sub#"$strip"/}" | xz -"$xz_level" -T2 > "$out.tmp" && mv "$out.tmp" "$out"
  cat "$tmp/.commit"
  rm -rf "$tmp"
}

# --- 1. the CLI and the tests from the Release build, without libtorch, plus the .NET runtime to run them -------
# The test project's build folder holds the CLI too (dreambooth.dll + its runtimeconfig/deps), so one folder serves
# both. Framework-dependent apps + a carried .NET runtime (the `dotnet` host, hostfxr, Microsoft.NETCore.App) cost
# less than two self-contained publishes, need no second restore, and put `dotnet` on the GPU machine's PATH.
# Left out: libtorch (the machine's PyTorch provides it: DREAMBOOTH_LIBTORCH), other RIDs' natives, and what the
# GPU test subset never loads (the notebook kernel: Roslyn, .NET Interactive, Plotly, FSharp; ONNX Runtime, used only
# by face detection; the VS test adapter). The Data and Notebooks tests therefore do not run there.
if [ "$skip_publish" = 0 ]; then
  command -v dotnet >/dev/null || { log "dotnet (the .NET 10 SDK) is required here"; exit 2; }
  log "building (Release) ..."
  (cd "$root" && dotnet build DreamBoothNotebooks.sln -c Release -nologo -v quiet >&2)
  bin="$root/tests/DreamBooth.Tests/bin/Release/net10.0"
  [ -f "$bin/DreamBooth.Tests.dll" ] && [ -f "$bin/dreambooth.dll" ] || { log "$bin lacks DreamBooth.Tests.dll or dreambooth.dll"; exit 1; }
  rm -rf "$stage"; mkdir -p "$stage/app/runtimes/linux-x64/native"
  cp "$bin"/*.dll "$bin"/*.json "$stage/app/"
  cp -r "$bin/assets" "$stage/app/"
  for f in libLibTorchSharp.so libSkiaSharp.so; do cp "$bin/runtimes/linux-x64/native/$f" "$stage/app/runtimes/linux-x64/native/"; done
  (cd "$stage/app" && rm -f Microsoft.CodeAnalysis*.dll Microsoft.DotNet.Interactive*.dll Plotly.NET*.dll FSharp.Core.dll Fable.Core.dll \
      Giraffe.ViewEngine.dll DynamicObj.dll Microsoft.DiaSymReader.dll Humanizer.dll Microsoft.TestPlatform.*.dll Microsoft.VisualStudio.*.dll \
      xunit.runner.visualstudio.testadapter.dll testhost.dll Microsoft.Data.Analysis.dll Apache.Arrow.dll System.Reactive.dll)
  # the deps files list the natives left out; the host refuses an app whose listed files are missing
  python3 - "$stage/app" <<'PY'
import json, os, sys
app = sys.argv[1]
for name in os.listdir(app):
    if not name.endswith(".deps.json"):
        continue
    path = os.path.join(app, name)
    deps = json.load(open(path))
    for target in deps.get("targets", {}).values():
        for lib in target.values():
            for kind in ("native", "runtime", "runtimeTargets"):
                assets = lib.get(kind)
                if not assets:
                    continue
                for rel in list(assets):
                    local = rel if kind != "runtime" else os.path.basename(rel)
                    if kind == "runtimeTargets":
                        keep = os.path.exists(os.path.join(app, rel))
                    elif kind == "native":
                        keep = os.path.exists(os.path.join(app, rel)) or os.path.exists(os.path.join(app, os.path.basename(rel)))
                    else:
                        keep = os.path.exists(os.path.join(app, local))
                    if not keep:
                        del assets[rel]
    json.dump(deps, open(path, "w"), indent=1)
PY
  # the .NET runtime of this SDK: host, hostfxr, Microsoft.NETCore.App (no ASP.NET: nothing here uses it)
  dotnet_root="$(dirname "$(readlink -f "$(command -v dotnet)")")"
  fx="$(dotnet --list-runtimes | awk '$1 == "Microsoft.NETCore.App" && $2 ~ /^10\./ {v=$2} END {print v}')"
  [ -n "$fx" ] && [ -d "$dotnet_root/shared/Microsoft.NETCore.App/$fx" ] || { log "no Microsoft.NETCore.App 10.x under $dotnet_root"; exit 1; }
  mkdir -p "$stage/dotnet/host/fxr" "$stage/dotnet/shared/Microsoft.NETCore.App"
  cp "$dotnet_root/dotnet" "$stage/dotnet/"
  cp -r "$dotnet_root/host/fxr/$fx" "$stage/dotnet/host/fxr/"
  cp -r "$dotnet_root/shared/Microsoft.NETCore.App/$fx" "$stage/dotnet/shared/Microsoft.NETCore.App/"
  # a smoke run of the assembled folder with the carried runtime (libtorch from the NuGet cache: CPU)
  DOTNET_ROOT="$stage/dotnet" "$stage/dotnet/dotnet" "$stage/app/dreambooth.dll" --help >/dev/null \
    || { log "the assembled app does not start with the carried runtime"; exit 1; }
  app_files=$(find "$stage/app" "$stage/dotnet" -type f | wc -l); app_mib=$(du -sm "$stage" | cut -f1)
  log "compressing $app_mib MiB (app + .NET $fx) ..."
  tar -C "$stage" -cf - app dotnet | xz -"$xz_level" -T2 > "$carry/app.tar.xz.tmp" && mv "$carry/app.tar.xz.tmp" "$carry/app.tar.xz"
  echo "$fx" > "$carry/.dotnet-version"
  rm -rf "$stage"
else
  [ -f "$carry/app.tar.xz" ] || { log "--skip-publish: $carry/app.tar.xz is missing"; exit 2; }
  app_files=null; app_mib=null
fi

# --- 2. diffusers (pure Python) and TorchSharp's native sources -------------------------------------------
log "packing diffusers from $diffusers ..."
diffusers_commit="$(pack_snapshot "$diffusers" src/diffusers src "$carry/diffusers.tar.xz")"
log "packing TorchSharp src/Native from $torchsharp ..."
torchsharp_commit="$(pack_snapshot "$torchsharp" src/Native src "$carry/torchsharp-native.tar.xz")"
diffusers_version="$(xz -dc "$carry/diffusers.tar.xz" | tar -xO diffusers/__init__.py | sed -n 's/^__version__ = "\(.*\)"/\1/p')"

# --- 3. size check: what the device tool sends = working tree (tracked + untracked, not ignored) + .gpu-carry ---
tree_bytes=$(cd "$root" && git ls-files -co --exclude-standard -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s+0}')
carry_bytes=$(find "$carry" -type f ! -name manifest.json -printf '%s\n' | awk '{s+=$1} END {print s+0}')
total=$((tree_bytes + carry_bytes))
limit=$((limit_mib * 1024 * 1024))
sha() { sha256sum "$1" | cut -d' ' -f1; }
cat > "$carry/manifest.json" <<EOF
{"prepared_at": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "repo_commit": "$(git -C "$root" rev-parse HEAD)",
 "app": {"file": "app.tar.xz", "bytes": $(stat -c %s "$carry/app.tar.xz"), "sha256": "$(sha "$carry/app.tar.xz")", "unpacked_mib": $app_mib, "files": $app_files, "dotnet_runtime": "$(cat "$carry/.dotnet-version" 2>/dev/null)", "libtorch": "not carried (DREAMBOOTH_LIBTORCH)"},
 "diffusers": {"file": "diffusers.tar.xz", "bytes": $(stat -c %s "$carry/diffusers.tar.xz"), "sha256": "$(sha "$carry/diffusers.tar.xz")", "version": "$diffusers_version", "source": "$diffusers", "commit": "$diffusers_commit"},
 "torchsharp_native": {"file": "torchsharp-native.tar.xz", "bytes": $(stat -c %s "$carry/torchsharp-native.tar.xz"), "sha256": "$(sha "$carry/torchsharp-native.tar.xz")", "source": "$torchsharp", "commit": "$torchsharp_commit"},
 "working_tree_bytes": $tree_bytes, "carry_bytes": $carry_bytes, "total_bytes": $total, "limit_bytes": $limit}
EOF
log "working tree $((tree_bytes >> 20)) MiB + .gpu-carry $((carry_bytes >> 20)) MiB = $((total >> 20)) MiB of $limit_mib MiB"
cat "$carry/manifest.json"
if [ "$total" -gt "$limit" ]; then log "too big: $total bytes > $limit (limit $limit_mib MiB)"; exit 3; fi
