"""Build the edgemoe._core extension from csrc/.

By default the runtime is compiled for the host CPU (-march=native), as a user
installing on their own laptop or board wants. EDGEMOE_PORTABLE=1 gives a build
that runs on any CPU of the architecture: the SIMD kernels are then chosen at
run time from what the CPU reports.
"""
import glob
import json
import os
import platform

from pybind11.setup_helpers import ParallelCompile, Pybind11Extension, build_ext
from setuptools import setup

ParallelCompile("EDGEMOE_BUILD_JOBS", default=0).install()


def compile_flags():
    flags = ["-O3", "-fvisibility=hidden", "-Wall", "-Wno-unused-function"]
    if os.environ.get("EDGEMOE_PORTABLE", "0") not in ("", "0"):
        return flags
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64", "i686", "aarch64", "arm64"):
        flags.append("-march=native" if "86" in machine or "amd" in machine else "-mcpu=native")
    return flags


def zstd_available() -> bool:
    """True if a C compiler can build and link against libzstd (Debian: libzstd-dev).

    Without it the runtime still builds; containers with zstd-compressed expert
    blobs are then refused with a message saying what to install."""
    import shutil
    import subprocess
    import tempfile

    cc = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if not cc or os.environ.get("EDGEMOE_ZSTD", "1") == "0":
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "t.c")
        with open(src, "w") as f:
            f.write("#include <zstd.h>\nint main(void) { return (int)ZSTD_versionNumber() < 10400; }\n")
        return subprocess.run([cc, src, "-lzstd", "-o", os.path.join(tmp, "t")], capture_output=True).returncode == 0


sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
# distutils rebuilds only sources older than their object; listing the headers makes a changed
# header (a default in runtime/options.h, a class layout) rebuild every source instead of leaving
# stale objects behind.
headers = sorted(glob.glob("csrc/**/*.h", recursive=True))
extra_flags = os.environ.get("EDGEMOE_EXTRA_CFLAGS", "").split()
HAVE_ZSTD = zstd_available()
cxx_flags = compile_flags() + extra_flags
# The extension reports the flags it was built with (_core.compile_flags()): tests build C++
# harnesses with the same flags to get bit-identical arithmetic, and bug reports can name them.
macros = [("EDGEMOE_COMPILE_FLAGS", json.dumps(" ".join(cxx_flags)))]

ext = Pybind11Extension(
    "edgemoe._core",
    sources,
    include_dirs=["csrc"],
    depends=headers,
    cxx_std=17,
    extra_compile_args=cxx_flags,
    extra_link_args=["-pthread"] + extra_flags,
    define_macros=macros + ([("EDGEMOE_HAVE_ZSTD", "1")] if HAVE_ZSTD else []),
    libraries=["zstd"] if HAVE_ZSTD else [],
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
