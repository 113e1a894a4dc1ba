"""Build the edgemoe._core extension from csrc/.

By default the runtime is compiled for the host CPU (-march=native), as a user
installing on their own laptop or board wants. EDGEMOE_PORTABLE=1 gives a build
that runs on any CPU of the architecture: the SIMD kernels are then chosen at
run time from what the CPU reports.
"""
import glob
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


sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
extra_flags = os.environ.get("EDGEMOE_EXTRA_CFLAGS", "").split()

ext = Pybind11Extension(
    "edgemoe._core",
    sources,
    include_dirs=["csrc"],
    cxx_std=17,
    extra_compile_args=compile_flags() + extra_flags,
    extra_link_args=["-pthread"] + extra_flags,
)

setup(ext_modules=[ext], cmdclass={"build_ext": build_ext})
