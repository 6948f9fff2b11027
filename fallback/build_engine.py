"""cffi build script for the CPU replication engine: module ``pyshm.fallback._engine_c``.

Run by setup.py (``cffi_modules``) at install time; API mode, so the C compiler checks
every declaration below against engine.h.
"""

from __future__ import annotations

import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CORE = os.path.join(os.path.dirname(HERE), "pyshm", "_core")


def _cdef_from_header() -> str:
    """The declarations of engine.h, minus what cffi's parser does not take."""
    with open(os.path.join(HERE, "engine.h")) as f:
        text = f.read()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    lines = [ln for ln in text.splitlines() if not ln.lstrip().startswith("#")]
    body = "\n".join(lines)
    # array sizes given by macros: cffi needs the numbers
    body = body.replace("PYSHM_ENGINE_MAX_THREADS]", "16]")
    return ("#define PYSHM_ENGINE_MAX_THREADS 16\n"
            "#define PYSHM_ENGINE_HIST_BUCKETS 704\n" + body)


# PYSHM_SANITIZE=1 (make test-asan): AddressSanitizer + UBSan build of the C core; the
# interpreter is not instrumented, so libasan is loaded with LD_PRELOAD when testing
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] if os.environ.get("PYSHM_SANITIZE") else []

ffibuilder = FFI()
ffibuilder.cdef(_cdef_from_header())
ffibuilder.set_source(
    "pyshm.fallback._engine_c",
    '#include "engine.h"\n',
    sources=[os.path.relpath(os.path.join(HERE, "engine.c")),
             os.path.relpath(os.path.join(HERE, "copy.c")),
             os.path.relpath(os.path.join(CORE, "crc32c.c")),
             # the ring's wake-up protocol, for wait="block"
             os.path.relpath(os.path.join(CORE, "ring.c"))],
    include_dirs=[HERE, CORE],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra",
                        "-Wno-unused-parameter"] + SANITIZE,
    extra_link_args=SANITIZE,
    libraries=["pthread"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
