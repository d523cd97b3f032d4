"""Builds the compiled lexicon scanner `megatron_prealign._C`; all metadata is in pyproject.toml.

The extension is not optional: a machine without a C++17 compiler fails here, loudly, instead of
installing a package whose code-switch scan would later fail at import.
"""
from glob import glob

from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

setup(
    ext_modules=[
        Pybind11Extension(
            "megatron_prealign._C",
            sources=sorted(glob("csrc/*.cpp")),
            include_dirs=["csrc"],
            cxx_std=17,
            extra_compile_args=["-O3", "-Wall"],
        )
    ],
    cmdclass={"build_ext": build_ext},
)
