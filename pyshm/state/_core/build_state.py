"""cffi API-mode build of the state region core: ``pyshm.state._state_c``.

The declarations are taken from state.h and state_mirror.h (comments and preprocessor
lines dropped, integer macros turned into ``#define NAME ...`` so that cffi reads their
values from the compiled headers); the compiler then checks every one against the C.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
RING_CORE = os.path.join(os.path.dirname(os.path.dirname(HERE)), "_core")
HEADERS = ["state.h", "state_mirror.h"]
SOURCES = ["state.c", "state_mirror.c"]


def _cdef_from_headers() -> str:
    out = []
    # the layout header's integer constants (its structs stay private to the C)
    with open(os.path.join(HERE, "state_layout.h")) as f:
        for line in f:
            m = re.match(r"\s*#define\s+(PYSHM_\w+)\s+[^\s\"]", line)
            if m and "(" not in m.group(1):
                out.append(f"#define {m.group(1)} ...")
    for name in HEADERS:
        with open(os.path.join(HERE, name)) as f:
            text = f.read()
        text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
        for line in text.splitlines():
            m = re.match(r"\s*#define\s+(PYSHM_\w+)\s+\S", line)
            if m:
                out.append(f"#define {m.group(1)} ...")
            elif not line.lstrip().startswith("#"):
                out.append(line)
    return "\n".join(out)


# PYSHM_SANITIZE=1 (make test-asan): AddressSanitizer + UBSan build
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] if os.environ.get("PYSHM_SANITIZE") else []

ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_headers())
ffibuilder.set_source(
    "pyshm.state._state_c",
    "".join(f'#include "{h}"\n' for h in ["state_layout.h", *HEADERS]),
    sources=[os.path.relpath(os.path.join(HERE, s)) for s in SOURCES],
    include_dirs=[os.path.relpath(HERE), os.path.relpath(RING_CORE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wshadow",
                        "-Wstrict-prototypes", "-Wno-unused-parameter"] + SANITIZE,
    extra_link_args=SANITIZE,
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
