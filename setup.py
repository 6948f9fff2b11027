"""Build hooks that pyproject.toml cannot express: the cffi extension modules.

Each C core is compiled in cffi API mode at install time from its build script; no
binary is committed.
"""

from setuptools import setup

setup(
    cffi_modules=[
        "pyshm/_core/build_ring.py:ffibuilder",  # -> pyshm._ring_c
        "fallback/build_engine.py:ffibuilder",   # -> pyshm.fallback._engine_c
        "pyshm/state/_core/build_state.py:ffibuilder",  # -> pyshm.state._state_c
    ],
)
