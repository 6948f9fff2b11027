"""cffi API-mode build of the mapping guard: ``pyshm._guard_c`` (see guard.c).

Its own module, apart from the ring core: it adds nothing to the publish/read path.
"""

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] if os.environ.get("PYSHM_SANITIZE") else []

ffibuilder = FFI()
ffibuilder.cdef("""
int pyshm_guard_install(void);
int pyshm_guard_register(uintptr_t start, uint64_t len, int prot, int ring);
int pyshm_guard_faulted(int handle);
void pyshm_guard_unregister(int handle);
uint64_t pyshm_guard_faults(void);
""")
ffibuilder.set_source(
    "pyshm._guard_c",
    '#include "guard.h"\n',
    sources=[os.path.relpath(os.path.join(HERE, "guard.c"))],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    + SANITIZE,
    extra_link_args=SANITIZE,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
