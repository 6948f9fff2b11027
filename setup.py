"""Build hooks that pyproject.toml cannot express: the C extension modules.

Each C core is compiled at install time; no binary is committed:
- pyshm._ring_c and pyshm.fallback._engine_c: cffi API mode, from their build scripts;
- pyshm._ring_fast: the ring's hot calls as a hand-written CPython extension
  (pyshm/_core/fastpath.c), compiled together with the same ring.c as pyshm._ring_c, so
  the protocol code exists once.
"""

import os

from setuptools import Extension, setup

# PYSHM_SANITIZE=1 (make test-asan): AddressSanitizer + UBSan, as in the cffi build scripts
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] if os.environ.get("PYSHM_SANITIZE") else []

ring_fast = Extension(
    "pyshm._ring_fast",
    sources=["pyshm/_core/fastpath.c", "pyshm/_core/ring.c"],
    include_dirs=["pyshm/_core"],
    depends=["pyshm/_core/ring.h", "pyshm/_core/layout.h"],
    # hidden: ring.c's symbols stay private to this module (pyshm._ring_c has its own)
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wshadow",
                        "-Wno-unused-parameter", "-Wno-missing-field-initializers",
                        "-fvisibility=hidden", "-pthread"] + SANITIZE,
    extra_link_args=["-pthread"] + SANITIZE,
)

setup(
    cffi_modules=[
        "pyshm/_core/build_ring.py:ffibuilder",  # -> pyshm._ring_c
        "pyshm/_core/build_guard.py:ffibuilder",  # -> pyshm._guard_c
        "fallback/build_engine.py:ffibuilder",   # -> pyshm.fallback._engine_c
        "pyshm/state/_core/build_state.py:ffibuilder",  # -> pyshm.state._state_c
    ],
    ext_modules=[ring_fast],
)
