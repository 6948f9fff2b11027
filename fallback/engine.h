/*
 * pyshm CPU replication engine: pthreads that mirror a ring into a replica with memcpy.
 *
 * One poll thread watches the ring's tail and copies [mirrored, tail) into the replica at
 * the same offsets; a large backlog is split across persistent copy workers. When the
 * replica carries a CRC table (PYSHM_FLAG_CRC_TABLE, layout.h) every copy is the fused
 * copy+CRC loop of crc32c.h and the table is kept with the replica. After every
 * copy the poll thread re-reads tail_intent (seqlock check) and publishes only the bytes
 * that were provably intact: first the replica's tail, then the ring's mirrored.
 *
 * Everything the engine reads from either header is validated once at create time and
 * cached; positions read at run time are checked before use, and every data access is
 * masked by capacity - 1, so a hostile segment can cause an error code, never an
 * out-of-bounds access.
 */
#ifndef PYSHM_ENGINE_H
#define PYSHM_ENGINE_H

#include <stdint.h>

#define PYSHM_ENGINE_MAX_THREADS 16
#define PYSHM_ENGINE_HIST_BUCKETS 704

/* error codes (negative return values; pyshm_engine_strerror names them) */
enum {
    PYSHM_EOK = 0,
    PYSHM_EINVAL = -1,        /* bad configuration value */
    PYSHM_EBADRING = -2,      /* ring header invalid */
    PYSHM_EBADREPLICA = -3,   /* replica header invalid or not flagged as a replica */
    PYSHM_EMISMATCH = -4,     /* ring and replica parameters differ */
    PYSHM_ETOOSMALL = -5,     /* mapping shorter than the header claims */
    PYSHM_ESTATE = -6,        /* call not valid in the current state */
    PYSHM_ETIMEDOUT = -7,     /* a wait ran out of time */
    PYSHM_ETHREAD = -8,       /* pthread_create / affinity failed */
    PYSHM_EBACKWARDS = -9,    /* ring tail went below the mirrored position */
    PYSHM_EPOSITION = -10,    /* replica/ring positions are inconsistent */
    PYSHM_ENOTLOSSLESS = -11, /* gating asked on an overwrite-mode ring */
    PYSHM_ENOMEM = -12,
    PYSHM_ENUMA = -13,        /* mbind failed */
    PYSHM_EFAILED = -14,      /* engine stopped itself after an error (see last_error) */
    PYSHM_EBADTABLE = -15,    /* the replica's CRC table header is invalid or truncated */
    PYSHM_ECHECKSUM = -16,    /* copy mode: a chunk's bytes do not have its CRC */
    PYSHM_EPRIORITY = -17,    /* the real-time priority asked for was refused */
};

/* idle strategies of the poll thread (the ring's names: spin, yield, sleep) */
enum {
    PYSHM_ENGINE_WAIT_SPIN = 0,
    PYSHM_ENGINE_WAIT_YIELD = 1,
    PYSHM_ENGINE_WAIT_SLEEP = 2,
    PYSHM_ENGINE_WAIT_BLOCK = 3, /* sleep in the ring's wake-up protocol (ring.h) */
};

enum {
    PYSHM_ENGINE_CREATED = 0,
    PYSHM_ENGINE_RUNNING = 1,
    PYSHM_ENGINE_PAUSED = 2,
    PYSHM_ENGINE_STOPPED = 3,
    PYSHM_ENGINE_FAILED = 4,
};

typedef struct {
    int32_t threads;          /* copy workers besides the poll thread (0..16) */
    uint64_t split_bytes;     /* backlogs at least this large are split across workers */
    int32_t wait;             /* PYSHM_ENGINE_WAIT_* when idle */
    uint32_t spin_count;      /* idle polls before yielding / sleeping */
    uint64_t max_sleep_ns;    /* back-off ceiling */
    int32_t gate;             /* set FLAG_GATE_ON_MIRROR on the ring (lossless only) */
    int32_t keep_gate;        /* leave the flag set after a clean stop */
    int32_t count_records;    /* walk copied headers: records count + replica next_sequence */
    int32_t poll_cpu;         /* -1: no pinning */
    int32_t poll_priority;    /* 0: ordinary scheduling; 1..99: SCHED_FIFO at that priority */
    int32_t copy_cpus[PYSHM_ENGINE_MAX_THREADS]; /* -1: no pinning */
    uint64_t flush_bytes;     /* msync the replica after this many bytes (0: never) */
    uint64_t flush_interval_ns; /* msync the replica at most this often while dirty (0: never) */
} pyshm_engine_config_t;

typedef struct {
    int32_t state;
    int32_t last_error;
    uint64_t start_position;  /* where mirroring started (replica tail at start) */
    uint64_t mirrored;        /* last published position */
    uint64_t tail;            /* ring tail last observed */
    uint64_t bytes_mirrored;
    uint64_t records_mirrored;
    uint64_t copies;          /* published copy rounds */
    uint64_t split_copies;    /* rounds that used the workers */
    uint64_t overruns;
    uint64_t bytes_lost;
    uint64_t errors;
    uint64_t flushes;
    uint64_t lag_ns;          /* age of the oldest unpublished committed byte, 0 when caught up */
    uint64_t lag_samples;
    uint64_t lag_p50_ns, lag_p99_ns, lag_p999_ns, lag_max_ns;
    /* end to end: from the producer's commit of a probed record to the publish of a
     * replica tail covering it (the producer's lag probes, layout.h) */
    uint64_t e2e_samples;
    uint64_t e2e_p50_ns, e2e_p99_ns, e2e_p999_ns, e2e_max_ns;
    uint64_t e2e_after_sleep; /* samples whose record waited while the poll thread slept */
    uint64_t poll_stalls;     /* spinning poll iterations more than 20 us apart: the
                               * thread was descheduled */
    uint64_t poll_stall_ns;   /* the time those gaps add up to */
    uint64_t last_copy_bytes, last_copy_ns;
    uint64_t elapsed_ns;      /* since start */
    uint64_t poll_busy_ns;    /* poll thread time spent copying / checking / publishing */
    uint64_t copy_busy_ns;    /* sum over workers */
    int32_t threads;
    int32_t crc_table;        /* 1: the replica carries a CRC table the engine keeps */
    uint32_t crc_block;       /* its block size in bytes */
    uint64_t crc_blocks;      /* blocks completed (their final CRC written) */
    uint64_t crc_valid_from;  /* the table's valid_from */
    int32_t poll_tid;
    int32_t worker_tids[PYSHM_ENGINE_MAX_THREADS];
} pyshm_engine_stats_t;

typedef struct pyshm_engine pyshm_engine_t;

void pyshm_engine_default_config(pyshm_engine_config_t *cfg);
/* ring/replica: the start of each mapping (header) and the mapped length. */
int pyshm_engine_create(void *ring, uint64_t ring_len, void *replica, uint64_t replica_len,
                        const pyshm_engine_config_t *cfg, pyshm_engine_t **out);
int pyshm_engine_start(pyshm_engine_t *e);
int pyshm_engine_pause(pyshm_engine_t *e, uint64_t timeout_ns);
int pyshm_engine_resume(pyshm_engine_t *e, uint64_t timeout_ns);
/* wait until the published position reaches the ring tail observed at call time */
int pyshm_engine_sync(pyshm_engine_t *e, uint64_t timeout_ns);
int pyshm_engine_stop(pyshm_engine_t *e, uint64_t timeout_ns);
void pyshm_engine_stats(pyshm_engine_t *e, pyshm_engine_stats_t *out);
/* frees; refuses (ESTATE) while threads may still run */
int pyshm_engine_destroy(pyshm_engine_t *e);
const char *pyshm_engine_strerror(int code);
/*
 * Copy mode (copy.c): restore through the engine. Each chunk is `len` bytes at `src_off` in
 * the source buffer that must have CRC32C `crc`; with dst == NULL they are only verified,
 * else copied to the ring data area dst (capacity bytes, a power of two) at
 * position & (capacity - 1) onwards (wrapping) and verified on the way, the CRC taken from
 * the bytes stored. `threads` threads in all, the caller's included. Returns 0,
 * PYSHM_ECHECKSUM with *bad_chunk the first chunk whose CRC differs (every chunk was
 * processed: a copy has written them all), or PYSHM_EINVAL / PYSHM_ENOMEM.
 */
typedef struct {
    uint64_t src_off;
    uint64_t position;
    uint64_t len;
    uint32_t crc;
    uint32_t reserved;
} pyshm_copy_chunk_t;

int pyshm_copy_chunks(const uint8_t *src, uint64_t src_len, uint8_t *dst, uint64_t capacity,
                      const pyshm_copy_chunk_t *chunks, uint64_t count, int threads,
                      uint64_t *bad_chunk);

/* bind [addr, addr+len) to a NUMA node (MPOL_BIND via mbind); -errno style on failure */
int pyshm_numa_bind(void *addr, uint64_t len, int node, int *err);

#endif /* PYSHM_ENGINE_H */
