"""Build hooks that pyproject.toml cannot express: the cffi extension modules.

Each C core is compiled in cffi API mode at install time from its build script; no
binary is committed.
"""

import os

from setuptools import setup

CFFI_MODULES = [
    "pyshm/_core/build_ring.py:ffibuilder",
    "fallback/build_engine.py:ffibuilder",
]

setup(
    # TODO(bootstrap): drop the existence filter once both build scripts have landed.
    cffi_modules=[m for m in CFFI_MODULES if os.path.exists(m.split(":")[0])],
)
