#!/usr/bin/env python3
"""Writes link stubs of the CUDA libraries cudarc links: a shared library per library,
with one empty function for every function cudarc's bindings declare, and the SONAME of
the real library of the CUDA release given, so that a binary linked against the stubs
loads the real libraries on a GPU machine.

Why by hand: the link of a `--features cuda` build needs libcuda.so (the driver, which
only a GPU machine has) and cuBLAS, cuRAND and NVRTC (hundreds of MB of wheels, of which
the link reads only the symbol names). No package provides all of them as stubs.

usage: cuda_stubs.py CUDARC_SRC OUT_DIR [--cuda-major 13]
"""

import argparse
import pathlib
import re
import subprocess
import sys

# library -> (cudarc's binding file, SONAME for CUDA release `major`)
LIBRARIES = {
    "cuda": ("driver/sys.rs", lambda major: "libcuda.so.1"),
    "nvrtc": ("nvrtc/sys.rs", lambda major: f"libnvrtc.so.{major}"),
    "cublas": ("cublas/sys.rs", lambda major: f"libcublas.so.{major}"),
    "cublasLt": ("cublaslt/sys.rs", lambda major: f"libcublasLt.so.{major}"),
    "curand": ("curand/sys.rs", lambda major: "libcurand.so.10"),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cudarc_src", type=pathlib.Path, help="cudarc's src/ folder")
    parser.add_argument("out_dir", type=pathlib.Path)
    parser.add_argument("--cuda-major", type=int, default=13)
    args = parser.parse_args()
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for library, (bindings, soname) in LIBRARIES.items():
        path = args.cudarc_src / bindings
        if not path.is_file():
            print(f"cuda_stubs.py: {path}: not found (is this cudarc's src/?)", file=sys.stderr)
            return 1
        names = sorted(set(re.findall(r"pub fn ([A-Za-z_][A-Za-z0-9_]*)\s*\(", path.read_text())))
        if not names:
            print(f"cuda_stubs.py: {path}: no functions declared", file=sys.stderr)
            return 1
        source = args.out_dir / f"{library}_stub.c"
        source.write_text("".join(f"void {name}(void) {{}}\n" for name in names))
        target = args.out_dir / f"lib{library}.so"
        subprocess.run(
            ["cc", "-shared", "-fPIC", f"-Wl,-soname,{soname(args.cuda_major)}",
             "-o", str(target), str(source)],
            check=True,
        )
        print(f"{target}: {len(names)} functions, SONAME {soname(args.cuda_major)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
