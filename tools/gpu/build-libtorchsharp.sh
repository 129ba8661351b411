#!/usr/bin/env bash
# Rebuilds TorchSharp's libLibTorchSharp.so from its own native sources (TorchSharp 0.107.0, src/Native) against the
# libtorch of a Python torch install, for the case tools/gpu/symbol_check.py finds symbols that torch's lib/ lacks.
#   tools/gpu/build-libtorchsharp.sh --native DIR --out DIR [--python python3] [--torch-dir DIR] [--jobs N] [--configure-only]
#     --native     TorchSharp's src/Native folder (a snapshot: .gpu-carry/torchsharp-native.tar.xz unpacks to Native/)
#     --torch-dir  the folder holding TorchConfig.cmake (default: from the Python torch: torch.utils.cmake_prefix_path/Torch)
# Then load it: DREAMBOOTH_LIBTORCHSHARP=OUT/libLibTorchSharp.so (the workbench checks it is a LibTorchSharp build).
# Prints one JSON line (step build_libtorchsharp) with the outcome, the compiler, the torch version, the first errors.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
native="" out="" py=python3 torch_dir="" jobs="$(nproc)" configure_only=0
while [ $# -gt 0 ]; do
  case "$1" in
    --native) native="$2"; shift 2 ;; --out) out="$2"; shift 2 ;; --python) py="$2"; shift 2 ;;
    --torch-dir) torch_dir="$2"; shift 2 ;; --jobs) jobs="$2"; shift 2 ;; --configure-only) configure_only=1; shift ;;
    *) echo "build-libtorchsharp: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
[ -f "$native/LibTorchSharp/CMakeLists.txt" ] || { echo "build-libtorchsharp: --native $native: expected TorchSharp's src/Native (LibTorchSharp/CMakeLists.txt)" >&2; exit 2; }
[ -n "$out" ] || { echo "build-libtorchsharp: --out DIR is required" >&2; exit 2; }
torch_version=""
if [ -z "$torch_dir" ]; then
  torch_dir="$("$py" -c 'import torch, os; print(os.path.join(torch.utils.cmake_prefix_path, "Torch"))')" || { echo "build-libtorchsharp: $py cannot import torch" >&2; exit 2; }
  torch_version="$("$py" -c 'import torch; print(torch.__version__)')"
fi
[ -f "$torch_dir/TorchConfig.cmake" ] || { echo "build-libtorchsharp: no TorchConfig.cmake in $torch_dir" >&2; exit 2; }
build="$out/build"; mkdir -p "$build"
gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
start=$(date +%s)
cmake -S "$here/libtorchsharp" -B "$build" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DTORCHSHARP_NATIVE="$(cd "$native" && pwd)" \
  -DTorch_DIR="$torch_dir" -DCMAKE_INSTALL_PREFIX="$out" > "$out/configure.log" 2>&1
configure_rc=$?
build_rc=null
if [ $configure_rc = 0 ] && [ $configure_only = 0 ]; then
  cmake --build "$build" -j "$jobs" -- -k 0 > "$out/build.log" 2>&1; build_rc=$?
  [ $build_rc = 0 ] && cmake --install "$build" >> "$out/build.log" 2>&1
fi
python3 - "$out" "$configure_rc" "$build_rc" "$torch_dir" "$torch_version" "$(( $(date +%s) - start ))" <<'PY'
import json, os, re, subprocess, sys
out, crc, brc, tdir, tver, secs = sys.argv[1:]
def tail(name, pattern):
    p = os.path.join(out, name)
    if not os.path.exists(p):
        return []
    lines = open(p, errors="replace").read().splitlines()
    return [l[:400] for l in lines if re.search(pattern, l)][:40]
lib = os.path.join(out, "libLibTorchSharp.so")
cxx = ""
try:
    cxx = subprocess.run(["c++", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
except Exception:
    pass
build_log = os.path.join(out, "build.log")
text = open(build_log, errors="replace").read() if os.path.exists(build_log) else ""
rec = {"step": "build_libtorchsharp", "configure_rc": int(crc), "build_rc": None if brc == "null" else int(brc),
       "seconds": int(secs), "torch_dir": tdir, "torch_version": tver or None, "compiler": cxx,
       "library": lib if os.path.exists(lib) else None,
       "configure_errors": tail("configure.log", r"(?i)error"),
       "errors_total": len(re.findall(r"\berror:", text)),
       "first_errors": tail("build.log", r"\berror:"),
       "failed_files": sorted(set(re.findall(r"FAILED: \S*?([A-Za-z0-9_]+\.c(?:pp)?)\.o", text)))}
rec["ok"] = rec["library"] is not None
print(json.dumps(rec))
PY
[ $configure_rc = 0 ] && { [ $configure_only = 1 ] || [ "$build_rc" = 0 ]; }
