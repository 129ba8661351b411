#!/usr/bin/env bash
# Runs notebooks headless in the real .NET Interactive kernel (dotnet-repl, from .config/dotnet-tools.json), in
# order, and fails visibly: exit 1 naming the notebook and the cell when a cell fails. dotnet-repl alone exits 2,
# prints nothing and goes on with the next cells, so this script reads the executed notebook to say which cell failed.
#
#   notebooks/run-headless.sh [--output DIR] [NOTEBOOK.dib ...]
#
# Default: 00-smoke, 01-prepare-data, 02-configure, 03-train, 04-xy-plot (each uses what the one before wrote).
# Executed copies go to DIR (default artifacts/headless/) as .ipynb; the notebooks' own outputs go where their
# parameters say (DREAMBOOTH_NOTEBOOK_WORKDIR, default runs/notebooks/). Needs the notebook library built first:
# either README Quick start command builds artifacts/notebook-lib/.
# Exit codes: 0 every cell ran, 1 a cell (or dotnet-repl) failed, 2 bad usage or missing prerequisites.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/artifacts/headless"
notebooks=()
while [ $# -gt 0 ]; do
  case "$1" in
    --output) [ $# -ge 2 ] || { echo "run-headless: --output needs a folder" >&2; exit 2; }; out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "run-headless: unknown option $1 (expected --output DIR or notebook paths)" >&2; exit 2 ;;
    *) notebooks+=("$1"); shift ;;
  esac
done
if [ ${#notebooks[@]} -eq 0 ]; then
  for n in 00-smoke 01-prepare-data 02-configure 03-train 04-xy-plot; do notebooks+=("$root/notebooks/$n.dib"); done
fi
for nb in "${notebooks[@]}"; do
  [ -f "$nb" ] || { echo "run-headless: $nb: notebook not found" >&2; exit 2; }
done
if [ ! -f "$root/artifacts/notebook-lib/DreamBooth.Interactive.dll" ]; then
  echo "run-headless: artifacts/notebook-lib/DreamBooth.Interactive.dll not found: build first, e.g." \
    "dotnet run --project src/DreamBooth.Cli -c Release -- demo --output runs/demo" >&2
  exit 2
fi
command -v node >/dev/null || { echo "run-headless: node (Node.js) is needed to read the executed notebooks" >&2; exit 2; }
mkdir -p "$out" && out="$(cd "$out" && pwd)" || { echo "run-headless: cannot create $out" >&2; exit 2; }

cd "$root" || exit 2
if ! restore_log="$(dotnet tool restore 2>&1)"; then
  echo "run-headless: dotnet tool restore failed:" >&2; echo "$restore_log" >&2; exit 2
fi

# Lists the cells of an executed .ipynb that carry an error output: "cell N (first line of its source): error".
failed_cells() {
  node -e '
    const nb = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
    const text = s => (Array.isArray(s) ? s.join("") : String(s ?? ""));
    nb.cells.forEach((c, i) => {
      for (const o of c.outputs ?? []) {
        if (o.output_type !== "error") continue;
        const first = text(c.source).split("\n").find(l => l.trim() !== "") ?? "";
        const err = (text(o.evalue).split("\n").find(l => l.trim() !== "") ?? o.ename ?? "").trim();
        console.log(`cell ${i + 1} (${first.trim().slice(0, 80)}): ${err.slice(0, 300)}`);
      }
    });' "$1"
}

for nb in "${notebooks[@]}"; do
  path="$(cd "$(dirname "$nb")" && pwd)/$(basename "$nb")"
  name="$(basename "$nb")"
  ipynb="$out/${name%.dib}.ipynb"
  rm -f "$ipynb"
  echo "run-headless: $name ..."
  t0=$(date +%s)
  # dotnet-repl 0.3 targets an older runtime: roll forward to the installed .NET 10. It runs from notebooks/,
  # where the notebooks' relative paths (#r "../artifacts/notebook-lib/...") start.
  (cd "$root/notebooks" && DOTNET_ROLL_FORWARD=Major dotnet repl --run "$path" --exit-after-run --output-path "$ipynb")
  rc=$?
  secs=$(( $(date +%s) - t0 ))
  if [ ! -f "$ipynb" ]; then
    echo "run-headless: $name FAILED: dotnet repl exited $rc after $secs s and wrote no executed notebook" >&2; exit 1
  fi
  failures="$(failed_cells "$ipynb")" || { echo "run-headless: $name: cannot read $ipynb" >&2; exit 1; }
  if [ -n "$failures" ]; then
    while IFS= read -r line; do echo "run-headless: $name FAILED at $line" >&2; done <<<"$failures"
    echo "run-headless: executed copy with the error outputs: $ipynb" >&2
    exit 1
  fi
  if [ "$rc" -ne 0 ]; then
    echo "run-headless: $name FAILED: dotnet repl exited $rc after $secs s (no cell carries an error; see $ipynb)" >&2; exit 1
  fi
  echo "run-headless: $name ok ($secs s) -> $ipynb"
done
echo "run-headless: ${#notebooks[@]} notebook(s), no failed cell"
