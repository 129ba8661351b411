#!/usr/bin/env python3
"""Does a libLibTorchSharp.so find every libtorch symbol it imports in a given torch lib/ folder?

TorchSharp 0.107's libLibTorchSharp.so was linked against libtorch 2.10. Before loading it over another
libtorch (e.g. the torch 2.11 wheel of a GPU machine), compare its undefined dynamic symbols
(`nm -D --undefined-only`) with the symbols that folder's libraries define (`nm -D --defined-only` of
libtorch_cpu.so, libtorch_cuda.so, libc10.so, libc10_cuda.so, libtorch.so). Symbols that carry a
system version (GLIBC_*, GLIBCXX_*, CXXABI_*, GCC_*) come from the C/C++ runtime and are not checked
here; weak undefined symbols are optional and not checked either.

Prints one JSON line (also appended to --out when given) with the counts and the missing symbols,
demangled with c++filt when it is on the PATH. Exit status: 0 none missing, 3 some missing,
2 bad input (a file or tool is missing).

Standard library only: it runs on the GPU machine before anything of ours is loaded.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys

DEFAULT_LIBS = ["libtorch_cpu.so", "libtorch_cuda.so", "libc10.so", "libc10_cuda.so", "libtorch.so"]
SYSTEM_VERSIONS = ("GLIBC_", "GLIBCXX_", "CXXABI_", "GCC_")


class BadInput(Exception):
    pass


def nm(path, *flags):
    """(type, name, version) of each dynamic symbol that `nm -D` lists with the given flags."""
    try:
        out = subprocess.run(["nm", "-D", *flags, path], check=True, capture_output=True, text=True).stdout
    except FileNotFoundError:
        raise BadInput("nm not found on the PATH (binutils)")
    except subprocess.CalledProcessError as e:
        raise BadInput(f"nm -D {' '.join(flags)} {path} failed: {e.stderr.strip()}")
    symbols = []
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        kind, name = parts[-2], parts[-1]
        version = ""
        if "@" in name:
            name, _, version = name.partition("@")
            version = version.lstrip("@")
        symbols.append((kind, name, version))
    return symbols


def demangle(names):
    if not names or shutil.which("c++filt") is None:
        return list(names), None
    out = subprocess.run(["c++filt"], input="\n".join(names) + "\n", capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()
    return (lines if len(lines) == len(names) else list(names)), "c++filt"


def check(libtorchsharp, libdir, libs=DEFAULT_LIBS, limit=200):
    if not os.path.isfile(libtorchsharp):
        raise BadInput(f"--libtorchsharp {libtorchsharp}: no such file (expected a libLibTorchSharp.so)")
    if not os.path.isdir(libdir):
        raise BadInput(f"--libdir {libdir}: no such folder (expected a torch lib/ folder holding libtorch_cpu.so)")
    present = [lib for lib in libs if os.path.isfile(os.path.join(libdir, lib))]
    if "libtorch_cpu.so" in libs and "libtorch_cpu.so" not in present:
        raise BadInput(f"--libdir {libdir}: libtorch_cpu.so not found there (expected a torch lib/ folder)")

    defined = set()
    per_lib = []
    for lib in libs:
        path = os.path.join(libdir, lib)
        if lib not in present:
            per_lib.append({"name": lib, "present": False})
            continue
        names = {name for kind, name, _ in nm(path, "--defined-only")}
        per_lib.append({"name": lib, "present": True, "defined": len(names)})
        defined |= names

    undefined = nm(libtorchsharp, "--undefined-only")
    system = [s for s in undefined if s[2].startswith(SYSTEM_VERSIONS)]
    weak = [s for s in undefined if s[0] in ("w", "v") and not s[2].startswith(SYSTEM_VERSIONS)]
    checked = sorted({name for kind, name, version in undefined
                      if kind not in ("w", "v") and not version.startswith(SYSTEM_VERSIONS)})
    missing = [name for name in checked if name not in defined]
    readable, demangler = demangle(missing[:limit])
    return {
        "step": "symbol_check",
        "libtorchsharp": os.path.abspath(libtorchsharp),
        "libdir": os.path.abspath(libdir),
        "libs": per_lib,
        "undefined_total": len(undefined),
        "system_symbols": len(system),
        "weak_symbols": len(weak),
        "checked": len(checked),
        "missing_count": len(missing),
        "missing": [{"mangled": m, "demangled": d} for m, d in zip(missing[:limit], readable)],
        "missing_truncated": len(missing) > limit,
        "demangler": demangler,
        "ok": not missing,
    }


def exports(path):
    """Names of the functions a library exports (nm -D --defined-only, type T)."""
    return {name for kind, name, _ in nm(path, "--defined-only") if kind == "T"}


def compare_exports(rebuilt, original):
    """A rebuilt LibTorchSharp must export every function the package's exports (TorchSharp's P/Invoke targets)."""
    for path, what in ((rebuilt, "--libtorchsharp"), (original, "--compare-exports")):
        if not os.path.isfile(path):
            raise BadInput(f"{what} {path}: no such file")
    mine, theirs = exports(rebuilt), exports(original)
    missing = sorted(theirs - mine)
    return {"step": "export_check", "libtorchsharp": os.path.abspath(rebuilt), "reference": os.path.abspath(original),
            "exports": len(mine), "reference_exports": len(theirs), "missing_count": len(missing), "missing": missing[:200],
            "extra_count": len(mine - theirs), "ok": not missing}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--libtorchsharp", required=True, help="path of libLibTorchSharp.so")
    p.add_argument("--libdir", help="torch lib/ folder (e.g. site-packages/torch/lib)")
    p.add_argument("--compare-exports", metavar="PACKAGE_SO", help="instead: check that --libtorchsharp exports every function PACKAGE_SO exports")
    p.add_argument("--libs", default=",".join(DEFAULT_LIBS), help="comma-separated library names to search")
    p.add_argument("--limit", type=int, default=200, help="at most this many missing symbols listed")
    p.add_argument("--out", help="append the JSON line to this file too")
    a = p.parse_args(argv)
    try:
        if a.compare_exports:
            result = compare_exports(a.libtorchsharp, a.compare_exports)
        elif not a.libdir:
            raise BadInput("--libdir is required (or --compare-exports)")
        else:
            result = check(a.libtorchsharp, a.libdir, [x for x in a.libs.split(",") if x], a.limit)
    except BadInput as e:
        print(f"symbol_check: {e}", file=sys.stderr)
        return 2
    line = json.dumps(result)
    print(line)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")
    return 0 if result["ok"] else 3


if __name__ == "__main__":
    sys.exit(main())
