#!/usr/bin/env bash
# One GPU visit (issues 17 and 18), run from the repository root on a machine with an NVIDIA GPU and a Python torch
# but no .NET, no diffusers and no network; needs .gpu-carry/ (tools/gpu/prepare-carry.sh) carried along.
#   OUT=/some/folder tools/gpu/visit.sh [--dry-run] [--budget SECONDS] [--only STEP,STEP]
# Visit A (default budget 540 s, one 10-minute device command) reaches the class images; visit B, if the session has
# time: --only unpack,env,symbols,rebuild,symbols_rebuilt,exports_rebuilt,weights,train_ablation_ours,train_ablation_ref,
# train_optimizers_ours,train_optimizers_ref,train_ablation_big_ours,train_ablation_big_ref,load,flops
# Writes JSON lines to $OUT/visit.jsonl: one {"step": "visit_step", ...} record per step (rc, seconds, timed out or
# skipped for lack of time) and the records the step's tools print (env, symbol_check, bench sample/train/forward
# lines with implementation ours|diffusers, parity_fullsize, tests, ...); each step's full output goes to
# $OUT/logs/, packed into $OUT/logs.tar.gz at the end. Steps run in order of value, each under its own timeout, and a
# step that would not fit the remaining budget is recorded as skipped: a slow step cannot eat the rest, and whatever
# ran is kept.
# --dry-run: the same steps on this CPU with the tiny models (DREAMBOOTH_LIBTORCH = the NuGet CPU libtorch unless set;
# Python from PYTHONPATH, e.g. Debian's torch 1.13 with tools/gpu/setup-local-python.sh's folder).
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
dry=0 budget=540 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry=1; shift ;;
    --budget) budget="$2"; shift 2 ;;
    --only) only=",$2,"; shift 2 ;;
    *) echo "visit: unknown argument '$1'" >&2; exit 2 ;;
  esac
done
out="${OUT:-$root/out/gpu-visit}"
mkdir -p "$out/logs"
jsonl="$out/visit.jsonl"
: > "$jsonl"
start=$(date +%s)
carry="$root/.gpu-carry"
run="$root/.gpu-run"                   # unpacked app, .NET, diffusers, TorchSharp sources (inside the repo: the tests find it; ignored, never carried)
work="${DREAMBOOTH_VISIT_WORK:-/tmp/dreambooth-visit}"   # big files (weights, outputs): never under $OUT
mkdir -p "$work"
py="${PYTHON:-python3}"

now() { date +%s; }
left() { echo $(( budget - ($(now) - start) )); }
record() { echo "$1" >> "$jsonl"; }
jstr() { "$py" -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }

# step NAME TIMEOUT MIN_LEFT CMD...: runs CMD under `timeout TIMEOUT` (cut to what the budget has left) if at least
# MIN_LEFT seconds remain; its stdout's JSON lines go to visit.jsonl, all output to logs/NAME.log.
step() {
  local name="$1" limit="$2" need="$3"; shift 3
  if [ -n "$only" ] && [ "$name" != unpack ] && [[ "$only" != *",$name,"* ]]; then return 0; fi
  local remaining; remaining=$(left)
  if [ "$remaining" -lt "$need" ]; then
    record "{\"step\": \"visit_step\", \"name\": \"$name\", \"skipped\": \"budget: ${remaining}s left, needs ${need}s\"}"
    echo "visit: skip $name (${remaining}s left)" >&2
    return 0
  fi
  [ "$limit" -gt "$remaining" ] && limit=$remaining
  echo "visit: $name (limit ${limit}s, ${remaining}s left)" >&2
  local t0; t0=$(now)
  # through bash -c, so that the step may be one of the functions below (exported with export -f)
  timeout --kill-after=10 "$limit" bash -c '"$@"' visit-step "$@" > "$out/logs/$name.log" 2> "$out/logs/$name.err"
  local rc=$?
  # on a timeout the step's shell ends first; give its children a moment to print what they had (e.g. test counts)
  if [ $rc = 124 ] || [ $rc = 137 ]; then sleep 5; fi
  grep -E '^\{' "$out/logs/$name.log" >> "$jsonl"
  local tail_err; tail_err=$(tail -c 600 "$out/logs/$name.err" | tr -d '\000')
  record "{\"step\": \"visit_step\", \"name\": \"$name\", \"rc\": $rc, \"timed_out\": $([ $rc = 124 ] || [ $rc = 137 ] && echo true || echo false), \"seconds\": $(( $(now) - t0 )), \"limit_s\": $limit, \"stderr_tail\": $(jstr "$tail_err")}"
  return $rc
}

unpack() { # archive dest
  mkdir -p "$2"
  "$py" -c 'import sys, tarfile; tarfile.open(sys.argv[1]).extractall(sys.argv[2])' "$1" "$2"
}

# ---------------------------------------------------------------------------------------------------------------
# 0. unpack the carry (the .NET runtime + app, diffusers, TorchSharp's native sources)
prepare() {
  [ -f "$carry/app.tar.xz" ] || { echo "visit: $carry/app.tar.xz missing (run tools/gpu/prepare-carry.sh and carry .gpu-carry)" >&2; return 2; }
  rm -rf "$run" && mkdir -p "$run"
  unpack "$carry/app.tar.xz" "$run" && unpack "$carry/diffusers.tar.xz" "$run/py" && unpack "$carry/torchsharp-native.tar.xz" "$run/torchsharp" || return 1
  echo "{\"step\": \"carry\", \"manifest\": $(cat "$carry/manifest.json" 2>/dev/null || echo null)}" | tr -d '\n'; echo
}
export root carry run work py out dry
export -f unpack prepare
step unpack 120 30 prepare || { echo "visit: cannot unpack the carry; stopping" >&2; exit 1; }

export DOTNET_ROOT="$run/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 DOTNET_NOLOGO=1
# .NET needs ICU unless told to run without it (then culture-aware text functions, e.g. the tokenizer's Unicode
# clean-up, behave differently: those tests are left out below)
if ! ldconfig -p 2>/dev/null | grep -q 'libicuuc\.so'; then export DOTNET_SYSTEM_GLOBALIZATION_INVARIANT=1; fi
export PATH="$DOTNET_ROOT:$PATH" DREAMBOOTH_CACHE="$work/cache" PYTHONUNBUFFERED=1
# the carried diffusers first on the GPU machine; in a dry run after the caller's PYTHONPATH (the carried diffusers
# needs torch >= 2.6: a CPU machine with an older torch brings its own older diffusers, see setup-local-python.sh)
if [ $dry = 1 ]; then
  export PYTHONPATH="$root/tools/gpu/reference${PYTHONPATH:+:$PYTHONPATH}:$run/py"
else
  export PYTHONPATH="$run/py:$root/tools/gpu/reference${PYTHONPATH:+:$PYTHONPATH}"
fi
db() { dotnet "$run/app/dreambooth.dll" "$@"; }
tests() { dotnet "$run/app/DreamBooth.Tests.dll" "$@"; }
package_lts="$run/app/runtimes/linux-x64/native/libLibTorchSharp.so"
export -f db tests

if [ $dry = 1 ]; then
  if [ -z "${DREAMBOOTH_LIBTORCH:-}" ]; then
    export DREAMBOOTH_LIBTORCH="$(ls -d "${NUGET_PACKAGES:-$HOME/.nuget/packages}"/libtorch-cpu-linux-x64/*/runtimes/linux-x64/native 2>/dev/null | tail -1)"
  fi
  # one thread each: on a shared CPU, libtorch's OpenMP pool oversubscribed by other work costs more than the kernels
  export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
  dev=cpu; tiny=(--tiny); pytiny=(--tiny); train_sizes=16x16; sample_sizes=16x16; big_size=16x24; parity_dtypes=fp32,bf16
  steps_train=(--steps 1 --warmup 0); steps_sample=(--steps 2); ref_model_flag=(--tiny)
else
  export DREAMBOOTH_LIBTORCH="${DREAMBOOTH_LIBTORCH:-$("$py" -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')}"
  dev=cuda; tiny=(); pytiny=(); train_sizes=512x512; sample_sizes=512x512,768x1024; big_size=768x1024; parity_dtypes=fp32,fp16,bf16
  steps_train=(--steps 20 --warmup 3); steps_sample=(--steps 20); ref_model_flag=(--sd15)
fi

# 1. the machine
environment() {
  "$py" - "$dry" <<'PY'
import json, os, platform, shutil, subprocess, sys
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True, timeout=30).stdout.strip()
    except Exception as e:
        return f"unavailable ({type(e).__name__})"
rec = {"step": "env", "dry_run": sys.argv[1] == "1", "host": platform.node(), "cpus": os.cpu_count(),
       "dotnet_invariant_globalization": os.environ.get("DOTNET_SYSTEM_GLOBALIZATION_INVARIANT") == "1",
       "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
       "python": platform.python_version(), "libtorch_dir": os.environ.get("DREAMBOOTH_LIBTORCH")}
try:
    import torch
    rec.update(torch=torch.__version__, torch_cuda=torch.version.cuda, cuda_available=torch.cuda.is_available(),
               torch_cxx11_abi=torch.compiled_with_cxx11_abi())
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        rec.update(gpu=p.name, gpu_memory_mib=p.total_memory >> 20, sm_count=p.multi_processor_count, capability=f"{p.major}.{p.minor}")
except Exception as e:
    rec["torch"] = f"unavailable ({e})"
rec["nvidia_smi"] = run("nvidia-smi", "--query-gpu=name,driver_version,memory.total,memory.used,clocks.max.sm", "--format=csv,noheader")
for tool in ("nm", "c++filt", "cmake", "ninja", "nvcc", "c++", "xz"):
    rec[f"has_{tool}"] = shutil.which(tool) is not None
rec["cmake_version"] = run("cmake", "--version").splitlines()[0] if shutil.which("cmake") else None
rec["nvcc_version"] = run("nvcc", "--version").splitlines()[-1] if shutil.which("nvcc") else None
for mod in ("diffusers", "transformers", "huggingface_hub", "safetensors", "pynvml", "bitsandbytes", "accelerate"):
    try:
        rec[mod] = getattr(__import__(mod), "__version__", "present")
    except Exception as e:
        rec[mod] = f"unavailable ({type(e).__name__}: {str(e)[:120]})"
st = os.statvfs("/tmp")
rec["tmp_free_gib"] = round(st.f_bavail * st.f_frsize / 2**30, 1)
print(json.dumps(rec))
PY
}
export -f environment
step env 60 10 environment

# 2. does TorchSharp 0.107's LibTorchSharp find its symbols in this libtorch? if not, rebuild it here and use that
step symbols 60 10 "$py" tools/gpu/symbol_check.py --libtorchsharp "$package_lts" --libdir "$DREAMBOOTH_LIBTORCH"
symbols_rc=$?
if [ $symbols_rc = 3 ] || [ -n "${VISIT_FORCE_REBUILD:-}" ]; then
  step rebuild 330 120 tools/gpu/build-libtorchsharp.sh --native "$run/torchsharp/Native" --out "$work/libtorchsharp" --python "$py"
  if [ -f "$work/libtorchsharp/libLibTorchSharp.so" ]; then
    export DREAMBOOTH_LIBTORCHSHARP="$work/libtorchsharp/libLibTorchSharp.so"
    step symbols_rebuilt 60 10 "$py" tools/gpu/symbol_check.py --libtorchsharp "$DREAMBOOTH_LIBTORCHSHARP" --libdir "$DREAMBOOTH_LIBTORCH"
    step exports_rebuilt 30 5 "$py" tools/gpu/symbol_check.py --libtorchsharp "$DREAMBOOTH_LIBTORCHSHARP" --compare-exports "$package_lts"
  fi
fi

# 3. our CLI on this libtorch
doctor() {
  db doctor > "$work/doctor.txt" 2>&1; local rc=$?
  "$py" -c 'import json,sys; print(json.dumps({"step": "doctor", "rc": int(sys.argv[2]), "text": open(sys.argv[1]).read()}))' "$work/doctor.txt" $rc
  return $rc
}
export -f doctor
step doctor 60 10 doctor

# 4. one set of random SD1.5 weights for every comparison below (diffusers folder, fp32)
rm -rf "$work/sd"
step weights 150 60 db bench forward "${tiny[@]}" --device cpu --write-random "$work/sd"
[ -d "$work/sd/unet" ] && ref_model=(--model "$work/sd") || ref_model=("${ref_model_flag[@]}")

# 5. issue 18 headline: the recipe's step (UNet+TE, EMA, no GC, Lion, bf16) at both sizes, ours then diffusers'
step train_ours 200 60 db bench train "${tiny[@]}" --device $dev --sizes "$train_sizes,$big_size" "${steps_train[@]}" \
  --train-text-encoder on --ema on --gradient-checkpointing off --optimizer lion --profile-steps 2
step train_ref 200 60 "$py" tools/gpu/reference/train_ref.py "${ref_model[@]}" --device $dev --sizes "$train_sizes,$big_size" \
  "${steps_train[@]}" --train-text-encoder on --ema on --gradient-checkpointing off --optimizer lion --profile-steps 2 --torch-profile

# 6. issue 17 headline: sampling at 512² and 768x1024, batch 1 and 8, CFG 7.5, fp16
step sample_ours 200 60 db bench sample "${tiny[@]}" --device $dev --sizes "$sample_sizes" --batches 1,8 "${steps_sample[@]}" --cfg 7.5
step sample_ref 200 60 "$py" tools/gpu/reference/sample_ref.py "${ref_model[@]}" --device $dev --sizes "$sample_sizes" --batches 1,8 "${steps_sample[@]}" --cfg 7.5

# 7. full-size parity: the same weights and inputs through ours and diffusers/transformers, fp32/fp16/bf16
parity_fullsize() {
  [ -d "$work/sd/unet" ] || { echo '{"step": "parity_fullsize", "skipped": "no weights folder (step weights failed)"}'; return 1; }
  rm -f "$work/inputs.safetensors" "$work/ours.safetensors"
  "$py" tools/gpu/reference/parity_fullsize.py prepare --model "$work/sd" --out "$work/inputs.safetensors" || return 1
  db bench forward --device $dev --model "$work/sd" --inputs "$work/inputs.safetensors" --outputs "$work/ours.safetensors" --dtypes $parity_dtypes || return 1
  "$py" tools/gpu/reference/parity_fullsize.py compare --model "$work/sd" --inputs "$work/inputs.safetensors" --ours "$work/ours.safetensors" --device $dev --dtypes $parity_dtypes
}
export dev parity_dtypes
export -f parity_fullsize
step parity_fullsize 180 60 parity_fullsize

# 8. the tiny-model tests through this libtorch (the test assembly runs itself: no SDK here)
gpu_subset="Tests.Models.|Tests.Training.|Tests.Pipelines.|Tests.Schedulers.|Tests.Checkpoints.|Tests.Text.|Tests.Cli.BenchCommandTests|Tests.Runtime.|Tests.Evaluation.XYPlotEngine|Tests.SelfHost."
# (the two left out assume the NuGet CPU libtorch: the cpu backend's doctor line, a libtorch folder without CUDA)
tests_exclude="CliTests.Doctor_reports_the_cpu_backend|An_existing_cpu_only_libtorch_folder|Tests.Parity."
[ "${DOTNET_SYSTEM_GLOBALIZATION_INVARIANT:-}" = 1 ] && tests_exclude="$tests_exclude|Tests.Text.ClipTokenizerTests"
step tests 180 60 tests --filter "$gpu_subset" --exclude "$tests_exclude"

# 9. the repository's parity fixtures (fp32 and bf16), when the branch that writes them has landed
parity_fixtures() {
  if [ ! -f tests/fixtures/parity/manifest.json ]; then
    echo '{"step": "parity_fixtures", "skipped": "tests/fixtures/parity is absent in this checkout"}'; return 0
  fi
  DREAMBOOTH_PARITY_DEVICE=$dev tests --filter "Tests.Parity."
}
export -f parity_fixtures
step parity_fixtures 120 30 parity_fixtures

# 10. class images at the recipe's size: 40 steps, CFG 7.5, batch 8
step class_images_ours 150 60 db bench sample "${tiny[@]}" --device $dev --sizes "$big_size" --batches 8 --steps $([ $dry = 1 ] && echo 2 || echo 40) --cfg 7.5
step class_images_ref 150 60 "$py" tools/gpu/reference/sample_ref.py "${ref_model[@]}" --device $dev --sizes "$big_size" --batches 8 --steps $([ $dry = 1 ] && echo 2 || echo 40) --cfg 7.5

# 11. issue 18 ablations (a second visit when the first one's budget is spent: --only with these step names):
#     512²: UNet+TE/UNet × EMA on/off × GC on/off with Lion (the trainer's flattened FlatLion); the recipe's case with
#     AdamW8bit and with the per-tensor Lion (what the flat one replaced);
#     768x1024: UNet+TE/UNet × GC on/off, EMA on, Lion. The reference has no AdamW8bit without bitsandbytes.
step train_ablation_ours 240 60 db bench train "${tiny[@]}" --device $dev --sizes "$train_sizes" "${steps_train[@]}" \
  --train-text-encoder both --ema both --gradient-checkpointing both --optimizer lion --profile-steps 0
step train_ablation_ref 240 60 "$py" tools/gpu/reference/train_ref.py "${ref_model[@]}" --device $dev --sizes "$train_sizes" "${steps_train[@]}" \
  --train-text-encoder both --ema both --gradient-checkpointing both --optimizer lion --profile-steps 0
step train_optimizers_ours 120 40 db bench train "${tiny[@]}" --device $dev --sizes "$train_sizes" "${steps_train[@]}" \
  --train-text-encoder on --ema on --gradient-checkpointing off --optimizer adamw8bit,lion-per-tensor --profile-steps 2
step train_optimizers_ref 90 30 "$py" tools/gpu/reference/train_ref.py "${ref_model[@]}" --device $dev --sizes "$train_sizes" "${steps_train[@]}" \
  --train-text-encoder on --ema on --gradient-checkpointing off --optimizer adamw8bit --profile-steps 0
step train_ablation_big_ours 200 60 db bench train "${tiny[@]}" --device $dev --sizes "$big_size" "${steps_train[@]}" \
  --train-text-encoder both --ema on --gradient-checkpointing both --optimizer lion --profile-steps 0
step train_ablation_big_ref 200 60 "$py" tools/gpu/reference/train_ref.py "${ref_model[@]}" --device $dev --sizes "$big_size" "${steps_train[@]}" \
  --train-text-encoder both --ema on --gradient-checkpointing both --optimizer lion --profile-steps 0

# 12. full-size single-file load from this machine's disk; the FLOP formula against PyTorch's own count
step load 150 60 db bench load "${tiny[@]}" --repeat 1
flops_model=(); [ -d "$work/sd/unet" ] && flops_model=(--model "$work/sd"); [ $dry = 1 ] && [ ${#flops_model[@]} = 0 ] && flops_model=(--tiny)
step flops 90 30 "$py" tools/gpu/reference/flops.py "${flops_model[@]}" --device $dev --size $([ $dry = 1 ] && echo 8x8 || echo 64x64)

record "{\"step\": \"visit_end\", \"seconds\": $(( $(now) - start )), \"budget_s\": $budget, \"dry_run\": $([ $dry = 1 ] && echo true || echo false)}"
tar -czf "$out/logs.tar.gz" -C "$out" logs && rm -rf "$out/logs"
echo "visit: done in $(( $(now) - start ))s; $(grep -c . "$jsonl") JSON lines in $jsonl" >&2
