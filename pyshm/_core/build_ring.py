"""cffi API-mode build of the ring core: ``pyshm._ring_c``.

Kept apart from the C source (ring.c/ring.h) in the argon2-cffi-bindings style: this
script only declares what Python may call and how to compile it.
"""

import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

# PYSHM_SANITIZE=1 (make test-asan): AddressSanitizer + UBSan build of the C core; the
# interpreter is not instrumented, so libasan is loaded with LD_PRELOAD when testing
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
            "-fno-omit-frame-pointer", "-g"] if os.environ.get("PYSHM_SANITIZE") else []

ffibuilder = FFI()

# The declarations Python sees; they must match ring.h (the compiler checks that,
# because the generated module includes ring.h and calls these functions).
ffibuilder.cdef("""
#define PYSHM_FULL ...
#define PYSHM_E_TOO_LARGE ...
#define PYSHM_E_CORRUPT ...
#define PYSHM_E_PARAM ...
#define PYSHM_E_STATE ...
#define PYSHM_E_BUSY ...
#define PYSHM_E_AHEAD ...
#define PYSHM_POS_LIMIT ...
#define PYSHM_MIN_PARTITION ...
#define PYSHM_FIELD_TAIL ...
#define PYSHM_FIELD_INTENT ...
#define PYSHM_FIELD_RECORD ...
#define PYSHM_FIELD_POSITION ...
#define PYSHM_FIELD_SEQUENCE ...
#define PYSHM_FIELD_NEXT_SEQ ...
#define PYSHM_WAIT_SPIN ...
#define PYSHM_WAIT_YIELD ...
#define PYSHM_WAIT_SLEEP ...
#define PYSHM_WAIT_BLOCK ...
#define PYSHM_WAKE_FENCE ...
#define PYSHM_WAKE_MEMBARRIER ...
#define PYSHM_WALK_E_PARAM ...
#define PYSHM_WALK_E_STRAY ...
#define PYSHM_WALK_E_PADDING ...
#define PYSHM_WALK_E_LENGTH ...
#define PYSHM_WALK_E_SEQUENCE ...
#define PYSHM_WALK_E_BOUNDS ...

typedef struct {
    uint64_t capacity, mask, psize;
    uint32_t max_record;
    uint32_t gate_flags;
    uint64_t tail;
    uint64_t intent;
    uint64_t sequence;
    uint64_t gate_limit;
    uint64_t claim_pos;
    uint32_t claim_len;
    int64_t last_error_pos;
    int32_t last_error_field;
    uint32_t wake_mode;
    uint64_t wakes;
    ...;
} pyshm_producer_t;

typedef struct {
    uint64_t capacity, mask, psize;
    uint32_t max_record;
    int32_t slot;
    uint64_t pos;
    uint64_t expect;
    int32_t have_expect;
    uint64_t skip_below;
    uint64_t lost;
    uint64_t start_seq;
    uint64_t laps;
    uint64_t msg_pos;
    uint64_t msg_seq;
    int32_t msg_type;
    uint32_t msg_len;
    uint64_t msg_off;
    int64_t last_error_pos;
    int32_t last_error_field;
    uint64_t meta[4];
    uint64_t sleeps;
    ...;
} pyshm_consumer_t;

uint64_t pyshm_layout_offset(int which);
uint64_t pyshm_get_counter(const void *hdr, int which);
void pyshm_set_counter(void *hdr, int which, uint64_t value);
int64_t pyshm_producer_pid_cas(void *hdr, int64_t expected, int64_t desired);
int pyshm_slot_claim(void *hdr, int index, int64_t expected_pid, int64_t pid);
void pyshm_slot_activate(void *hdr, int index, uint64_t position, uint64_t flags,
                         int64_t now_ns);
void pyshm_slot_read(const void *hdr, int index, int64_t *out4);
uint64_t pyshm_gate_join(void *hdr);
int pyshm_slot_release(void *hdr, int index, int64_t pid);

int pyshm_producer_open(pyshm_producer_t *p, void *hdr, uint64_t mapped_size);
int64_t pyshm_publish(pyshm_producer_t *p, const char *buf, uint64_t len, int32_t type);
int64_t pyshm_claim(pyshm_producer_t *p, uint64_t len);
int64_t pyshm_commit(pyshm_producer_t *p, int32_t type, uint64_t len);
int64_t pyshm_publish_fixed(pyshm_producer_t *p, const char *buf, uint64_t stride,
                            uint64_t len, uint64_t count, int32_t type);
int64_t pyshm_publish_var(pyshm_producer_t *p, const char *buf, const uint64_t *ends,
                          uint64_t count, int32_t type);
int64_t pyshm_room(pyshm_producer_t *p);
int64_t pyshm_producer_set_sequence(pyshm_producer_t *p, uint64_t sequence);

int pyshm_consumer_open(pyshm_consumer_t *c, void *hdr, uint64_t mapped_size, int32_t slot);
int pyshm_consumer_seek(pyshm_consumer_t *c, int whence, uint64_t sequence);
int64_t pyshm_read(pyshm_consumer_t *c);
int64_t pyshm_wait_read(pyshm_consumer_t *c, int64_t timeout_ns, int strategy);
int64_t pyshm_read_batch(pyshm_consumer_t *c, uint8_t *out, uint64_t out_size,
                         uint64_t *ends, int32_t *types, uint64_t *seqs, uint64_t max);
int pyshm_still_valid(const pyshm_consumer_t *c);
void pyshm_consumer_touch(pyshm_consumer_t *c);
int pyshm_read_into(pyshm_consumer_t *c, uint8_t *dst, uint64_t dst_room);
int64_t pyshm_wait_data(pyshm_consumer_t *c, int64_t timeout_ns, int strategy, int sleeper);
void pyshm_wake_force_fence(int on);

typedef struct {
    uint64_t pos;
    uint64_t count;
    uint64_t first_seq;
    uint64_t last_seq;
    uint64_t payload_bytes;
    uint64_t padding_bytes;
    int64_t error_pos;
    int32_t error;
    ...;
} pyshm_walk_t;
int pyshm_walk(pyshm_walk_t *w, const uint8_t *buf, uint64_t buf_len, uint64_t base,
               uint64_t mask, uint64_t end, uint64_t until, uint64_t psize,
               uint32_t max_record);

int pyshm_walk_chains(pyshm_walk_t *w, const uint64_t *ends, int32_t count,
                      const uint8_t *buf, uint64_t buf_len, uint64_t base, uint64_t mask,
                      uint64_t psize, uint32_t max_record);

uint32_t pyshm_crc32c(uint32_t crc, const void *buf, uint64_t len);
uint32_t pyshm_crc32c_copy(uint32_t crc, void *dst, const void *src, uint64_t len,
                           int nontemporal);
void pyshm_crc32c_store_fence(void);
void pyshm_crc32c_copy_blocks(uint32_t *crcs, void *dst, const void *src, uint64_t count,
                              uint64_t block_len, int nontemporal);
uint32_t pyshm_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);
uint32_t pyshm_crc32c_x8n(uint64_t len);
uint32_t pyshm_crc32c_mult(uint32_t a, uint32_t b);
uint32_t pyshm_crc32c_fold(uint32_t crc, const uint32_t *block_crcs, uint64_t count,
                           uint64_t block_len);
int pyshm_crc32c_hardware(void);
void pyshm_crc32c_force_portable(int on);
""")

ffibuilder.set_source(
    "pyshm._ring_c",
    '#include "layout.h"\n#include "ring.h"\n#include "crc32c.h"\n#include "walk.h"\n',
    sources=[os.path.relpath(os.path.join(HERE, "ring.c")),
             os.path.relpath(os.path.join(HERE, "crc32c.c")),
             os.path.relpath(os.path.join(HERE, "walk.c"))],
    include_dirs=[os.path.relpath(HERE)],
    extra_compile_args=["-O2", "-std=gnu11", "-Wall", "-Wextra", "-Wshadow",
                        "-Wstrict-prototypes", "-Wno-unused-parameter"] + SANITIZE,
    extra_link_args=SANITIZE,
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
