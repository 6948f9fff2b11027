/*
 * pyshm CPU replication engine. See engine.h for the contract and docs/engine.md for the
 * reasoning behind each ordering.
 */
#define _GNU_SOURCE
#include "engine.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "crc32c.h"
#include "layout.h"
#include "ring.h"

/* copies of at least this many bytes (per thread) use streaming stores: they would only
 * evict the cache, and the fused loop keeps memcpy speed with them */
#define NT_BYTES (1u << 20)
/* publishes remembered to date a probe found after the round that covered it */
#define PUB_HISTORY 8
/* the ring's end-to-end lag summary is refreshed at most this often */
#define SUMMARY_EVERY_NS 5000000ull
/* `block`: the longest single sleep in the ring's wake-up protocol */
#define BLOCK_SLICE_NS 20000000ll
/* a spinning poll loop that went this long between two iterations was descheduled */
#define STALL_NS 20000ull

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define AL(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define AS(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define AADD(p, v) __atomic_fetch_add((p), (v), __ATOMIC_RELAXED)

enum { CMD_RUN = 0, CMD_PAUSE = 1, CMD_STOP = 2 };

typedef struct {
    uint64_t start, end;
} job_t;

struct pyshm_engine {
    pyshm_header_t *ring;
    uint8_t *ring_data;
    pyshm_header_t *rep;
    uint8_t *rep_data;
    uint64_t rep_len;
    uint64_t cap, mask, psize;
    uint32_t max_record;
    pyshm_engine_config_t cfg;

    /* the replica's CRC table, NULL when it has none */
    pyshm_crc_header_t *crc;
    uint32_t *crc_entries;
    uint32_t bshift;
    uint64_t bsize, bslots;

    pthread_t poll;
    int poll_started;
    pthread_t workers[PYSHM_ENGINE_MAX_THREADS];
    int nworkers;

    int cmd;   /* CMD_*, written by API calls */
    int state; /* PYSHM_ENGINE_*, written by the poll thread (and create/stop) */
    int gate_set;

    /* work dispatch to the copy workers */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    uint64_t gen;
    int exit_workers;
    int pending;
    job_t jobs[PYSHM_ENGINE_MAX_THREADS];

    /* statistics: written by engine threads with relaxed atomics, read by stats() */
    pyshm_engine_stats_t st;
    uint64_t started_ns;
    uint64_t first_seen_ns;
    uint64_t worker_busy[PYSHM_ENGINE_MAX_THREADS];
    uint64_t hist[PYSHM_ENGINE_HIST_BUCKETS];

    /* end-to-end lag: the producer's probes (layout.h), poll thread only but the
     * histogram, read by stats() */
    uint64_t e2e_hist[PYSHM_ENGINE_HIST_BUCKETS];
    int probe_pending;
    uint64_t probe_acked, probe_gen, probe_pos, probe_ns;
    uint64_t pub_tail[PUB_HISTORY], pub_ns[PUB_HISTORY]; /* recent publishes */
    unsigned pub_n;
    uint64_t summary_ns;     /* when the ring's lag summary words were last refreshed */
    uint64_t last_wake_ns;   /* end of the poll thread's last sleep or yield */
};

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns) {
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

const char *pyshm_engine_strerror(int code) {
    switch (code) {
    case PYSHM_EOK: return "ok";
    case PYSHM_EINVAL: return "invalid engine configuration";
    case PYSHM_EBADRING: return "ring header is invalid";
    case PYSHM_EBADREPLICA: return "replica header is invalid or not flagged as a replica";
    case PYSHM_EMISMATCH: return "ring and replica parameters differ";
    case PYSHM_ETOOSMALL: return "mapping is shorter than the header's capacity";
    case PYSHM_ESTATE: return "not valid in the engine's current state";
    case PYSHM_ETIMEDOUT: return "timed out";
    case PYSHM_ETHREAD: return "could not create or pin an engine thread";
    case PYSHM_EBACKWARDS: return "ring tail went below the mirrored position (ring reset?)";
    case PYSHM_EPOSITION: return "replica tail is ahead of the ring tail or misaligned";
    case PYSHM_ENOTLOSSLESS: return "gating needs a lossless ring";
    case PYSHM_ENOMEM: return "out of memory";
    case PYSHM_ENUMA: return "NUMA binding failed";
    case PYSHM_EFAILED: return "engine stopped after an error";
    case PYSHM_EBADTABLE: return "the replica's CRC table is invalid or truncated";
    case PYSHM_ECHECKSUM: return "checksum mismatch";
    case PYSHM_EPRIORITY:
        return "real-time priority refused (needs CAP_SYS_NICE or an RLIMIT_RTPRIO that allows it)";
    default: return "unknown error";
    }
}

void pyshm_engine_default_config(pyshm_engine_config_t *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->threads = 0;
    cfg->split_bytes = 1u << 20;
    cfg->wait = PYSHM_ENGINE_WAIT_SLEEP;
    cfg->spin_count = 2000;
    cfg->max_sleep_ns = 50000;
    cfg->count_records = 1;
    cfg->poll_cpu = -1;
    for (int i = 0; i < PYSHM_ENGINE_MAX_THREADS; i++) cfg->copy_cpus[i] = -1;
}

static int pow2(uint64_t x) { return x && !(x & (x - 1)); }

static int check_header(const pyshm_header_t *h, uint64_t len) {
    if (len < PYSHM_HEADER_SIZE) return PYSHM_ETOOSMALL;
    if (memcmp(h->magic, PYSHM_MAGIC, 8) != 0 || h->version != PYSHM_LAYOUT_VERSION) return -100;
    uint64_t cap = h->capacity;
    uint32_t parts = h->partition_count;
    if (!pow2(cap) || cap < PYSHM_MIN_CAPACITY || cap > (1ull << 46)) return -100;
    if (!pow2(parts) || cap / parts < 64) return -100;
    if (h->max_record < PYSHM_RECORD_HEADER || h->max_record > (cap / parts) / 4) return -100;
    if (len < PYSHM_HEADER_SIZE + cap) return PYSHM_ETOOSMALL;
    return 0;
}

int pyshm_engine_create(void *ring, uint64_t ring_len, void *replica, uint64_t replica_len,
                        const pyshm_engine_config_t *cfg, pyshm_engine_t **out) {
    *out = NULL;
    if (!ring || !replica || !cfg) return PYSHM_EINVAL;
    if (cfg->threads < 0 || cfg->threads > PYSHM_ENGINE_MAX_THREADS) return PYSHM_EINVAL;
    if (cfg->wait < PYSHM_ENGINE_WAIT_SPIN || cfg->wait > PYSHM_ENGINE_WAIT_BLOCK) return PYSHM_EINVAL;
    if (cfg->split_bytes < 4096) return PYSHM_EINVAL;
    if (cfg->poll_priority < 0 || cfg->poll_priority > 99) return PYSHM_EINVAL;
    if ((uint8_t *)ring < (uint8_t *)replica + replica_len &&
        (uint8_t *)replica < (uint8_t *)ring + ring_len)
        return PYSHM_EINVAL; /* overlapping mappings: mirroring a ring into itself */
    pyshm_header_t *r = ring, *p = replica;
    int rc = check_header(r, ring_len);
    if (rc) return rc == -100 ? PYSHM_EBADRING : rc;
    rc = check_header(p, replica_len);
    if (rc) return rc == -100 ? PYSHM_EBADREPLICA : rc;
    if (!(p->flags & PYSHM_FLAG_REPLICA)) return PYSHM_EBADREPLICA;
    if (r->flags & PYSHM_FLAG_REPLICA) return PYSHM_EBADRING; /* a replica is read-only here */
    if (r->capacity != p->capacity || r->partition_count != p->partition_count ||
        r->max_record != p->max_record)
        return PYSHM_EMISMATCH;
    if (cfg->gate && !(r->flags & PYSHM_FLAG_LOSSLESS)) return PYSHM_ENOTLOSSLESS;
    pyshm_crc_header_t *tbl = NULL;
    if (p->flags & PYSHM_FLAG_CRC_TABLE) {
        /* validated once here; at run time only positions index it, masked */
        uint64_t at = PYSHM_HEADER_SIZE + p->capacity;
        if (replica_len < at + PYSHM_CRC_HEADER_SIZE) return PYSHM_EBADTABLE;
        tbl = (pyshm_crc_header_t *)((uint8_t *)replica + at);
        uint32_t sh = tbl->block_shift;
        uint64_t psize = p->capacity / p->partition_count;
        if (memcmp(tbl->magic, PYSHM_CRC_MAGIC, 8) != 0 || sh < PYSHM_CRC_MIN_BLOCK_SHIFT ||
            sh > PYSHM_CRC_MAX_BLOCK_SHIFT || (1ull << sh) > psize ||
            tbl->entries != (p->capacity >> sh) ||
            replica_len - at - PYSHM_CRC_HEADER_SIZE < 4ull * tbl->entries)
            return PYSHM_EBADTABLE;
    }

    pyshm_engine_t *e = calloc(1, sizeof(*e));
    if (!e) return PYSHM_ENOMEM;
    e->ring = r;
    e->ring_data = (uint8_t *)ring + PYSHM_HEADER_SIZE;
    e->rep = p;
    e->rep_data = (uint8_t *)replica + PYSHM_HEADER_SIZE;
    e->rep_len = replica_len;
    e->cap = r->capacity;
    e->mask = e->cap - 1;
    e->psize = e->cap / r->partition_count;
    e->max_record = r->max_record;
    e->cfg = *cfg;
    if (tbl) {
        e->crc = tbl;
        e->crc_entries = (uint32_t *)((uint8_t *)tbl + PYSHM_CRC_HEADER_SIZE);
        e->bshift = tbl->block_shift;
        e->bsize = 1ull << e->bshift;
        e->bslots = e->cap >> e->bshift;
    }
    if (e->cfg.spin_count == 0) e->cfg.spin_count = 1;
    if (e->cfg.max_sleep_ns == 0) e->cfg.max_sleep_ns = 1000;
    pthread_mutex_init(&e->mu, NULL);
    pthread_cond_init(&e->cv, NULL);
    e->state = PYSHM_ENGINE_CREATED;
    e->st.threads = cfg->threads;
    *out = e;
    return 0;
}

/* ---- statistics ------------------------------------------------------------------ */

/* Log-linear buckets: exact below 64 ns, then 16 sub-buckets per power of two. */
static int hist_index(uint64_t v) {
    if (v < 64) return (int)v;
    int exp = 63 - __builtin_clzll(v);
    int idx = 64 + (exp - 6) * 16 + (int)((v >> (exp - 4)) & 15);
    return idx < PYSHM_ENGINE_HIST_BUCKETS ? idx : PYSHM_ENGINE_HIST_BUCKETS - 1;
}

static uint64_t hist_value(int idx) {
    if (idx < 64) return (uint64_t)idx;
    int exp = (idx - 64) / 16 + 6, sub = (idx - 64) % 16;
    uint64_t lo = (1ull << exp) + ((uint64_t)sub << (exp - 4));
    return lo + (1ull << (exp - 4)) / 2; /* middle of the bucket */
}

static uint64_t hist_bucket_quantile(const uint64_t *hist, uint64_t total, double q) {
    if (!total) return 0;
    uint64_t want = (uint64_t)(q * (double)total);
    if (want >= total) want = total - 1;
    uint64_t acc = 0;
    for (int i = 0; i < PYSHM_ENGINE_HIST_BUCKETS; i++) {
        acc += AL(&hist[i]);
        if (acc > want) return hist_value(i);
    }
    return hist_value(PYSHM_ENGINE_HIST_BUCKETS - 1);
}

/* The middle of the bucket holding quantile q, clamped to the largest sample: a bucket's
 * middle can lie above every sample in it, and a p50 above the max is nonsense. */
static uint64_t hist_quantile(const uint64_t *hist, uint64_t total, double q, uint64_t max) {
    uint64_t v = hist_bucket_quantile(hist, total, q);
    return v > max ? max : v;
}

static void record_lag(pyshm_engine_t *e, uint64_t lag) {
    AADD(&e->hist[hist_index(lag)], 1);
    AADD(&e->st.lag_samples, 1);
    if (lag > AL(&e->st.lag_max_ns)) AS(&e->st.lag_max_ns, lag);
}

/* ---- end-to-end lag ------------------------------------------------------------ */

static void note_publish(pyshm_engine_t *e, uint64_t tail, uint64_t t) {
    unsigned i = e->pub_n++ % PUB_HISTORY;
    e->pub_tail[i] = tail;
    e->pub_ns[i] = t;
}

/* When the earliest remembered publish that covered pos happened; 0 if none did yet. */
static uint64_t covered_at(const pyshm_engine_t *e, uint64_t pos) {
    unsigned n = e->pub_n < PUB_HISTORY ? e->pub_n : PUB_HISTORY;
    for (unsigned k = n; k > 0; k--) {
        unsigned i = (e->pub_n - k) % PUB_HISTORY;
        if (e->pub_tail[i] >= pos) return e->pub_ns[i];
    }
    return 0;
}

/* Percentiles of the end-to-end histogram into the ring's header, for readers in other
 * processes (pyshm stats): each word is written alone, a reader may mix two refreshes. */
static void publish_summary(pyshm_engine_t *e, uint64_t now) {
    pyshm_mirrored_span_t *m = &e->ring->mirrored;
    uint64_t total = AL(&e->st.e2e_samples), max = AL(&e->st.e2e_max_ns);
    pyshm_store_relaxed(&m->lag_p50_ns, hist_quantile(e->e2e_hist, total, 0.50, max));
    pyshm_store_relaxed(&m->lag_p99_ns, hist_quantile(e->e2e_hist, total, 0.99, max));
    pyshm_store_relaxed(&m->lag_p999_ns, hist_quantile(e->e2e_hist, total, 0.999, max));
    pyshm_store_relaxed(&m->lag_max_ns, max);
    pyshm_store_relaxed(&m->lag_samples, total);
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    pyshm_store_release(&m->lag_updated_ns,
                        (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec);
    e->summary_ns = now;
}

/*
 * Take the producer's probe if there is a new one, and settle it once a publish covers
 * its position: lag = that publish's time - the producer's stamp (both CLOCK_MONOTONIC).
 * The engine looks at the probe on every poll, so the covering publish is the current
 * round's or one just before (kept in pub_tail/pub_ns). A stamp can land after the round
 * that copied its record (lag 0, the record was readable before the stamp). Only after
 * settling is the probe acknowledged, which lets the producer offer the next one.
 */
static void probe_check(pyshm_engine_t *e) {
    pyshm_header_t *h = e->ring;
    if (!e->probe_pending) {
        uint64_t g = pyshm_load_acquire(&h->next_sequence.probe_gen);
        if (g == e->probe_acked) return;
        e->probe_gen = g;
        e->probe_pos = pyshm_load_relaxed(&h->next_sequence.probe_pos);
        e->probe_ns = pyshm_load_relaxed(&h->next_sequence.probe_ns);
        e->probe_pending = 1;
    }
    uint64_t t = covered_at(e, e->probe_pos);
    if (!t) return;
    uint64_t lag = t > e->probe_ns ? t - e->probe_ns : 0;
    AADD(&e->e2e_hist[hist_index(lag)], 1);
    AADD(&e->st.e2e_samples, 1);
    if (lag > AL(&e->st.e2e_max_ns)) AS(&e->st.e2e_max_ns, lag);
    if (e->last_wake_ns > e->probe_ns) AADD(&e->st.e2e_after_sleep, 1);
    pyshm_store_relaxed(&h->mirrored.lag_last_ns, lag);
    pyshm_store_release(&h->mirrored.probe_ack, e->probe_gen);
    e->probe_acked = e->probe_gen;
    e->probe_pending = 0;
    if (t - e->summary_ns >= SUMMARY_EVERY_NS) publish_summary(e, t);
}

void pyshm_engine_stats(pyshm_engine_t *e, pyshm_engine_stats_t *o) {
    pyshm_engine_stats_t *s = &e->st;
    memset(o, 0, sizeof(*o));
    o->state = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
    o->last_error = AL(&s->last_error);
    o->start_position = AL(&s->start_position);
    o->mirrored = AL(&s->mirrored);
    o->tail = pyshm_load_acquire(&e->ring->tail.value);
    o->bytes_mirrored = AL(&s->bytes_mirrored);
    o->records_mirrored = AL(&s->records_mirrored);
    o->copies = AL(&s->copies);
    o->split_copies = AL(&s->split_copies);
    o->overruns = AL(&s->overruns);
    o->bytes_lost = AL(&s->bytes_lost);
    o->errors = AL(&s->errors);
    o->flushes = AL(&s->flushes);
    uint64_t seen = AL(&e->first_seen_ns);
    int running = o->state == PYSHM_ENGINE_RUNNING || o->state == PYSHM_ENGINE_PAUSED;
    o->lag_ns = (seen && running) ? now_ns() - seen : 0;
    uint64_t total = AL(&s->lag_samples);
    o->lag_samples = total;
    /* every quantile is clamped to the max reported with it (a later sample may land in
     * the buckets while they are summed: clamped, it still never passes that max) */
    uint64_t max = AL(&s->lag_max_ns);
    o->lag_p50_ns = hist_quantile(e->hist, total, 0.50, max);
    o->lag_p99_ns = hist_quantile(e->hist, total, 0.99, max);
    o->lag_p999_ns = hist_quantile(e->hist, total, 0.999, max);
    o->lag_max_ns = max;
    total = AL(&s->e2e_samples);
    max = AL(&s->e2e_max_ns);
    o->e2e_samples = total;
    o->e2e_p50_ns = hist_quantile(e->e2e_hist, total, 0.50, max);
    o->e2e_p99_ns = hist_quantile(e->e2e_hist, total, 0.99, max);
    o->e2e_p999_ns = hist_quantile(e->e2e_hist, total, 0.999, max);
    o->e2e_max_ns = max;
    o->e2e_after_sleep = AL(&s->e2e_after_sleep);
    o->poll_stalls = AL(&s->poll_stalls);
    o->poll_stall_ns = AL(&s->poll_stall_ns);
    o->last_copy_bytes = AL(&s->last_copy_bytes);
    o->last_copy_ns = AL(&s->last_copy_ns);
    uint64_t st = AL(&e->started_ns);
    uint64_t end = AL(&s->elapsed_ns); /* frozen at stop */
    o->elapsed_ns = end ? end : (st ? now_ns() - st : 0);
    o->poll_busy_ns = AL(&s->poll_busy_ns);
    uint64_t cb = 0;
    for (int i = 0; i < e->nworkers; i++) cb += AL(&e->worker_busy[i]);
    o->copy_busy_ns = cb;
    o->threads = e->cfg.threads;
    if (e->crc) {
        o->crc_table = 1;
        o->crc_block = (uint32_t)e->bsize;
        o->crc_blocks = AL(&s->crc_blocks);
        o->crc_valid_from = pyshm_load_relaxed(&e->crc->valid_from);
    }
    o->poll_tid = AL(&s->poll_tid);
    for (int i = 0; i < PYSHM_ENGINE_MAX_THREADS; i++) o->worker_tids[i] = AL(&s->worker_tids[i]);
}

/* ---- copying --------------------------------------------------------------------- */

/*
 * Copy [start, end) with the fused copy+CRC loop and keep the table: each block's entry
 * is the CRC of its bytes from the block start up to where they have been written. A
 * piece that starts a block starts from 0; one that continues a block continues its
 * entry (the previous round ended there, or start() rebuilt it). Blocks never straddle
 * the wrap (the block size divides the capacity). Streaming stores are fenced here, by
 * the thread that issued them, before anything is published.
 */
#define RUN_BLOCKS 1024 /* whole blocks copied per pyshm_crc32c_copy_blocks call */

static void copy_range_crc(pyshm_engine_t *e, uint64_t start, uint64_t end) {
    int nt = end - start >= NT_BYTES;
    uint64_t completed = 0;
    uint32_t crcs[RUN_BLOCKS];
    while (start < end) {
        uint64_t off = start & e->mask;
        uint64_t whole = (end - start) >> e->bshift;
        uint64_t before_wrap = (e->cap - off) >> e->bshift;
        if (whole > before_wrap) whole = before_wrap;
        if (whole > RUN_BLOCKS) whole = RUN_BLOCKS;
        if (nt && !(start & (e->bsize - 1)) && whole >= 4) {
            /* a run of whole blocks, none across the wrap: several far apart at once
             * (crc32c.c); their entries are consecutive and each starts from 0 */
            pyshm_crc32c_copy_blocks(crcs, e->rep_data + off, e->ring_data + off, whole,
                                     e->bsize, 1);
            uint64_t first = (start >> e->bshift) & (e->bslots - 1);
            for (uint64_t i = 0; i < whole; i++)
                pyshm_store_relaxed(&e->crc_entries[first + i], crcs[i]);
            completed += whole;
            start += whole << e->bshift;
            continue;
        }
        uint64_t bstart = start & ~(e->bsize - 1);
        uint64_t stop = bstart + e->bsize < end ? bstart + e->bsize : end;
        uint32_t *entry = &e->crc_entries[(start >> e->bshift) & (e->bslots - 1)];
        uint32_t crc = start == bstart ? 0 : pyshm_load_relaxed(entry);
        crc = pyshm_crc32c_copy(crc, e->rep_data + off, e->ring_data + off, stop - start, nt);
        pyshm_store_relaxed(entry, crc);
        if (stop == bstart + e->bsize) completed++;
        start = stop;
    }
    if (nt) pyshm_crc32c_store_fence();
    AADD(&e->st.crc_blocks, completed);
}

/* Copy ring positions [start, end) to the replica; end - start <= capacity. */
static void copy_range(pyshm_engine_t *e, uint64_t start, uint64_t end) {
    if (e->crc) {
        copy_range_crc(e, start, end);
        return;
    }
    while (start < end) {
        uint64_t off = start & e->mask;
        uint64_t n = end - start;
        if (n > e->cap - off) n = e->cap - off; /* split at the wrap */
        memcpy(e->rep_data + off, e->ring_data + off, n);
        start += n;
    }
}

static void *worker_main(void *arg) {
    pyshm_engine_t *e = ((void **)arg)[0];
    int idx = (int)(intptr_t)((void **)arg)[1];
    free(arg);
    AS(&e->st.worker_tids[idx], (int32_t)syscall(SYS_gettid));
    uint64_t seen = 0;
    for (;;) {
        pthread_mutex_lock(&e->mu);
        while (e->gen == seen && !e->exit_workers) pthread_cond_wait(&e->cv, &e->mu);
        if (e->exit_workers) {
            pthread_mutex_unlock(&e->mu);
            return NULL;
        }
        seen = e->gen;
        job_t job = e->jobs[idx + 1];
        pthread_mutex_unlock(&e->mu);
        uint64_t t0 = now_ns();
        copy_range(e, job.start, job.end);
        AADD(&e->worker_busy[idx], now_ns() - t0);
        __atomic_fetch_sub(&e->pending, 1, __ATOMIC_RELEASE);
    }
}

/* Copy [start, end), splitting a large backlog across the workers. */
static void copy_backlog(pyshm_engine_t *e, uint64_t start, uint64_t end) {
    uint64_t n = end - start;
    if (e->nworkers == 0 || n < e->cfg.split_bytes) {
        copy_range(e, start, end);
        return;
    }
    int parts = e->nworkers + 1;
    /* cut at whole cache lines, or at whole CRC blocks so that every block's entry is
     * written by one thread (only the first piece continues a block) */
    uint64_t grain = e->crc ? e->bsize : 64;
    uint64_t chunk = n / (uint64_t)parts;
    pthread_mutex_lock(&e->mu);
    uint64_t p = start;
    for (int i = 0; i < parts; i++) {
        uint64_t q = (start + (uint64_t)(i + 1) * chunk) & ~(grain - 1);
        if (i == parts - 1 || q > end) q = end;
        if (q < p) q = p;
        e->jobs[i].start = p;
        e->jobs[i].end = q;
        p = q;
    }
    __atomic_store_n(&e->pending, e->nworkers, __ATOMIC_RELAXED);
    e->gen++;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    copy_range(e, e->jobs[0].start, e->jobs[0].end);
    unsigned spins = 0;
    while (__atomic_load_n(&e->pending, __ATOMIC_ACQUIRE) > 0) {
        if (++spins < 1000) cpu_relax();
        else sched_yield();
    }
    AADD(&e->st.split_copies, 1);
}

/*
 * Walk the record headers of replica positions [start, end) (bytes already verified
 * intact, and only this thread writes them). Every length is bounded before use.
 */
static int walk_records(pyshm_engine_t *e, uint64_t start, uint64_t end, uint64_t *count,
                        uint64_t *last_seq, int *have_seq) {
    uint64_t pos = start;
    while (pos < end) {
        uint64_t off = pos & e->mask;
        uint64_t room = e->psize - (pos & (e->psize - 1));
        if (end - pos < PYSHM_PADDING_MIN) return -1;
        int32_t len, type;
        memcpy(&len, e->rep_data + off, 4);
        memcpy(&type, e->rep_data + off + 4, 4);
        if (type == PYSHM_PADDING_TYPE) {
            if (len < 0 || (uint64_t)len != room) return -1;
            pos += room;
            continue;
        }
        if (len < (int32_t)PYSHM_RECORD_HEADER || (uint32_t)len > e->max_record) return -1;
        uint64_t step = pyshm_align8((uint64_t)len);
        if (step > room || pos + step > end) return -1;
        memcpy(last_seq, e->rep_data + off + 8, 8);
        *have_seq = 1;
        (*count)++;
        pos += step;
    }
    return 0;
}

/* ---- the poll thread --------------------------------------------------------------- */

static uint64_t oldest_boundary(pyshm_engine_t *e, uint64_t intent) {
    uint64_t low = intent > e->cap ? intent - e->cap : 0;
    return (low + e->psize - 1) / e->psize * e->psize;
}

/*
 * The replica intent after a resynchronisation at partition start r: the smallest value
 * whose oldest boundary (first partition start >= intent - capacity) is r. It never
 * passes the ring's intent that r was derived from (r <= intent - capacity + psize - 1).
 */
static uint64_t resync_intent(pyshm_engine_t *e, uint64_t r) {
    return r + e->cap - e->psize + 1;
}

static void set_failed(pyshm_engine_t *e, int code) {
    AS(&e->st.last_error, code);
    AADD(&e->st.errors, 1);
}

static void maybe_flush(pyshm_engine_t *e, uint64_t *dirty, uint64_t *last_flush, int force) {
    if (!*dirty) return;
    uint64_t now = now_ns();
    int by_bytes = e->cfg.flush_bytes && *dirty >= e->cfg.flush_bytes;
    int by_time = e->cfg.flush_interval_ns && now - *last_flush >= e->cfg.flush_interval_ns;
    if (!(by_bytes || by_time || (force && (e->cfg.flush_bytes || e->cfg.flush_interval_ns))))
        return;
    /* the mapping start is page aligned (mmap); msync the whole replica mapping */
    if (msync(e->rep, e->rep_len, MS_SYNC) != 0) set_failed(e, PYSHM_EINVAL);
    else AADD(&e->st.flushes, 1);
    *dirty = 0;
    *last_flush = now;
}

static void *poll_main(void *arg) {
    pyshm_engine_t *e = arg;
    AS(&e->st.poll_tid, (int32_t)syscall(SYS_gettid));
    /* Linux rounds a thread's sleeps up by its timer slack, 50 us by default: every
     * `sleep` back-off step would last at least that long, whatever it asked for */
    prctl(PR_SET_TIMERSLACK, 1000ul, 0ul, 0ul, 0ul);
    /* pos: next byte to copy; above pub (the last published tail) only while a resync
     * point r waits for the producer to commit past it */
    uint64_t pos = AL(&e->st.mirrored);
    uint64_t pub = pos;
    uint64_t r = 0;
    unsigned idle = 0;
    uint64_t sleep = 1000;
    uint64_t dirty = 0, last_flush = now_ns();
    uint64_t last_spin = 0; /* time of the previous spinning poll, 0 after anything else */
    int gap = 0;

    for (;;) {
        int cmd = __atomic_load_n(&e->cmd, __ATOMIC_ACQUIRE);
        if (cmd == CMD_STOP) break;
        if (cmd == CMD_PAUSE) {
            maybe_flush(e, &dirty, &last_flush, 1);
            __atomic_store_n(&e->state, PYSHM_ENGINE_PAUSED, __ATOMIC_RELEASE);
            sleep_ns(20000);
            e->last_wake_ns = now_ns();
            last_spin = 0;
            continue;
        }
        if (__atomic_load_n(&e->state, __ATOMIC_RELAXED) != PYSHM_ENGINE_RUNNING)
            __atomic_store_n(&e->state, PYSHM_ENGINE_RUNNING, __ATOMIC_RELEASE);

        probe_check(e);
        uint64_t tail = pyshm_load_acquire(&e->ring->tail.value);
        if (tail >= pub && tail <= pos && !(tail & 7)) {
            AS(&e->st.tail, tail);
            maybe_flush(e, &dirty, &last_flush, 0);
            /* idle: wait according to the strategy */
            idle++;
            if (e->cfg.wait == PYSHM_ENGINE_WAIT_SPIN || idle < e->cfg.spin_count) {
                /* a spinning poll that comes long after the last one was descheduled:
                 * count it, it is where an end-to-end lag tail comes from on a busy box */
                uint64_t t = now_ns();
                if (last_spin && t - last_spin > STALL_NS) {
                    AADD(&e->st.poll_stalls, 1);
                    AADD(&e->st.poll_stall_ns, t - last_spin);
                }
                last_spin = t;
                cpu_relax();
            } else if (e->cfg.wait == PYSHM_ENGINE_WAIT_YIELD) {
                sched_yield();
                e->last_wake_ns = now_ns();
                last_spin = 0;
            } else if (e->cfg.wait == PYSHM_ENGINE_WAIT_BLOCK) {
                /* the producer's wake-up ends it; the bound is how soon a stop or pause
                 * that did not reach it (pyshm_wake_sleepers) is noticed anyway */
                if (pyshm_engine_block(e->ring, tail, BLOCK_SLICE_NS) < 0)
                    AADD(&e->st.errors, 1);
                e->last_wake_ns = now_ns();
                last_spin = 0;
            } else {
                sleep_ns(sleep);
                e->last_wake_ns = now_ns();
                last_spin = 0;
                sleep = sleep * 2 > e->cfg.max_sleep_ns ? e->cfg.max_sleep_ns : sleep * 2;
            }
            continue;
        }
        last_spin = 0;
        idle = 0;
        sleep = 1000;
        uint64_t t0 = now_ns();
        if (!AL(&e->first_seen_ns)) AS(&e->first_seen_ns, t0);
        AS(&e->st.tail, tail);
        if (tail < pub || (tail & 7)) {
            set_failed(e, tail < pub ? PYSHM_EBACKWARDS : PYSHM_EPOSITION);
            __atomic_store_n(&e->state, PYSHM_ENGINE_FAILED, __ATOMIC_RELEASE);
            AS(&e->st.elapsed_ns, now_ns() - e->started_ns);
            return NULL;
        }
        uint64_t intent = pyshm_load_acquire(&e->ring->tail_intent.value);
        if (intent < tail) { /* the protocol stores intent first: a corrupt header */
            AADD(&e->st.errors, 1);
            intent = tail;
        }
        /*
         * Resynchronisation rule (the RTL's, docs/engine.md): after an overrun the engine
         * restarts at r, the oldest intact partition start, and raises the replica's
         * intent to at least resync_intent(r), whose oldest boundary is r itself, so no
         * replica reader starts below r where older laps or torn bytes remain. If r is
         * not below the tail yet (the producer ran on between our loads of tail and
         * intent), nothing is published until the tail passes r, as the RTL waits for
         * tail > start: the replica never shows a window whose oldest boundary lies above
         * its tail. Resyncing to the tail itself would start replica readers at the tail's
         * partition start, on the stale bytes below the tail.
         */
        uint64_t s = pos;
        /*
         * Byte-exact lap test (docs/design.md: lapped iff intent > position + capacity). The
         * partition-aligned oldest boundary is only where to resume once bytes were really
         * lost: a producer gated on mirrored may legitimately reach s + capacity with s
         * mid-partition, and every byte from s on is then still intact.
         */
        if (intent > s + e->cap) {
            uint64_t oldest = oldest_boundary(e, intent);
            /* lapped before we even started (a fresh replica starts silently) */
            if (pos > 0 || AL(&e->st.copies) > 0) {
                AADD(&e->st.overruns, 1);
                AADD(&e->st.bytes_lost, oldest - s);
            }
            r = oldest;
            gap = 1;
            pos = r;
            if (r >= tail) continue;
            s = r;
        }
        /*
         * Replica readers must see its intent before the bytes of the lap they would
         * overwrite change (the producer's own protocol, applied to the replica). After a
         * gap, the intent also hides the stale bytes below r from replica readers.
         */
        uint64_t rintent = pyshm_load_relaxed(&e->rep->tail_intent.value);
        uint64_t want = tail;
        if (gap && resync_intent(e, r) > want) want = resync_intent(e, r);
        if (want > rintent) {
            pyshm_store_relaxed(&e->rep->tail_intent.value, want);
            pyshm_fence_release();
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
        }
        copy_backlog(e, s, tail);
        pyshm_fence_acquire();
        uint64_t intent2 = pyshm_load_acquire(&e->ring->tail_intent.value);
        if (intent2 < intent) intent2 = intent;
        if (intent2 > s + e->cap) {
            /*
             * The producer overwrote part of what we copied. Bytes at positions >=
             * intent2 - capacity were not touched before our reads finished, so the
             * records from the next partition boundary on are intact: keep those,
             * count the rest as lost. Never publish over torn bytes.
             */
            r = oldest_boundary(e, intent2);
            AADD(&e->st.overruns, 1);
            AADD(&e->st.bytes_lost, r - s);
            gap = 1;
            pos = r;
            if (r >= tail) continue; /* nothing intact: publish nothing, as above */
            s = r;
            uint64_t w = resync_intent(e, r);
            if (w > pyshm_load_relaxed(&e->rep->tail_intent.value)) {
                pyshm_store_relaxed(&e->rep->tail_intent.value, w);
                __atomic_thread_fence(__ATOMIC_SEQ_CST);
            }
        }
        if (e->cfg.count_records && s < tail) {
            uint64_t n = 0, seq = 0;
            int have = 0;
            if (walk_records(e, s, tail, &n, &seq, &have) != 0) AADD(&e->st.errors, 1);
            AADD(&e->st.records_mirrored, n);
            if (have) pyshm_store_release(&e->rep->next_sequence.value, seq + 1);
        }
        /* the CRC table's tail before the replica's: a reader that finds them equal
         * (engine paused or stopped) knows the entries describe the replica's bytes */
        if (e->crc) pyshm_store_release(&e->crc->table_tail, tail);
        /* replica first: a crash in between leaves replica tail >= ring mirrored, never <= */
        pyshm_store_release(&e->rep->tail.value, tail);
        if (tail > pyshm_load_relaxed(&e->ring->mirrored.value))
            pyshm_store_release(&e->ring->mirrored.value, tail);
        __atomic_store_n(&e->st.mirrored, tail, __ATOMIC_RELEASE);
        uint64_t t1 = now_ns();
        note_publish(e, tail, t1);
        probe_check(e);
        record_lag(e, t1 - AL(&e->first_seen_ns));
        AS(&e->first_seen_ns, 0);
        AADD(&e->st.bytes_mirrored, tail - s);
        AADD(&e->st.copies, 1);
        AS(&e->st.last_copy_bytes, tail - s);
        AS(&e->st.last_copy_ns, t1 - t0);
        AADD(&e->st.poll_busy_ns, t1 - t0);
        dirty += tail - s;
        maybe_flush(e, &dirty, &last_flush, 0);
        pos = pub = tail;
        gap = 0;
    }
    maybe_flush(e, &dirty, &last_flush, 1);
    if (AL(&e->st.e2e_samples)) publish_summary(e, now_ns());
    AS(&e->st.elapsed_ns, now_ns() - e->started_ns);
    __atomic_store_n(&e->state, PYSHM_ENGINE_STOPPED, __ATOMIC_RELEASE);
    return NULL;
}

/* ---- lifecycle ------------------------------------------------------------------- */

static int pin(pthread_attr_t *attr, int cpu) {
    if (cpu < 0) return 0;
    if (cpu >= CPU_SETSIZE) return -1;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    return pthread_attr_setaffinity_np(attr, sizeof(set), &set) ? -1 : 0;
}

static void stop_workers(pyshm_engine_t *e) {
    pthread_mutex_lock(&e->mu);
    e->exit_workers = 1;
    pthread_cond_broadcast(&e->cv);
    pthread_mutex_unlock(&e->mu);
    for (int i = 0; i < e->nworkers; i++) pthread_join(e->workers[i], NULL);
    e->nworkers = 0;
}

static void clear_gate(pyshm_engine_t *e) {
    if (e->gate_set && !e->cfg.keep_gate)
        __atomic_fetch_and(&e->ring->flags, ~PYSHM_FLAG_GATE_ON_MIRROR, __ATOMIC_SEQ_CST);
    e->gate_set = 0;
}

/*
 * Make the CRC table agree with the replica tail t before mirroring continues from it.
 * When table_tail == t the last engine stopped cleanly: the entry of t's block already
 * holds the CRC of [block start, t) and the copy continues it. Otherwise (a crash between
 * the table's and the replica's tail, or an engine that does not keep the table mirrored
 * meanwhile) nothing below t's block start is trusted: valid_from moves up to it and the
 * part of t's block below t is checksummed again from the replica (under one block).
 */
static void crc_table_resume(pyshm_engine_t *e, uint64_t t) {
    pyshm_crc_header_t *c = e->crc;
    uint64_t bstart = t & ~(e->bsize - 1);
    uint64_t from = pyshm_load_acquire(&c->valid_from);
    if (pyshm_load_acquire(&c->table_tail) != t || from > t || (from & (e->bsize - 1))) {
        if (t > bstart) {
            uint32_t crc = pyshm_crc32c(0, e->rep_data + (bstart & e->mask), t - bstart);
            pyshm_store_relaxed(&e->crc_entries[(t >> e->bshift) & (e->bslots - 1)], crc);
        }
        pyshm_store_release(&c->valid_from, bstart);
        pyshm_store_release(&c->table_tail, t);
    }
}

int pyshm_engine_start(pyshm_engine_t *e) {
    if (e->state != PYSHM_ENGINE_CREATED) return PYSHM_ESTATE;
    /* resume from what the replica already holds: a restart after a crash loses nothing */
    uint64_t rtail = pyshm_load_acquire(&e->rep->tail.value);
    uint64_t tail = pyshm_load_acquire(&e->ring->tail.value);
    if (rtail > tail || (rtail & 7)) return PYSHM_EPOSITION;
    if (e->cfg.gate) {
        __atomic_fetch_or(&e->ring->flags, PYSHM_FLAG_GATE_ON_MIRROR, __ATOMIC_SEQ_CST);
        e->gate_set = 1;
    }
    if (e->crc) crc_table_resume(e, rtail);
    /* a crash between the two publishing stores leaves ring mirrored behind: repair */
    if (rtail > pyshm_load_acquire(&e->ring->mirrored.value))
        pyshm_store_release(&e->ring->mirrored.value, rtail);
    AS(&e->st.start_position, rtail);
    AS(&e->st.mirrored, rtail);
    /* a probe stamped before this engine ran would measure the time it was not running:
     * consume it unmeasured; the lag summary in the ring is this engine's from now on */
    e->probe_acked = pyshm_load_acquire(&e->ring->next_sequence.probe_gen);
    pyshm_store_release(&e->ring->mirrored.probe_ack, e->probe_acked);
    pyshm_mirrored_span_t *m = &e->ring->mirrored;
    pyshm_store_relaxed(&m->lag_samples, 0);
    pyshm_store_relaxed(&m->lag_last_ns, 0);
    pyshm_store_relaxed(&m->lag_p50_ns, 0);
    pyshm_store_relaxed(&m->lag_p99_ns, 0);
    pyshm_store_relaxed(&m->lag_p999_ns, 0);
    pyshm_store_relaxed(&m->lag_max_ns, 0);
    pyshm_store_release(&m->lag_updated_ns, 0);
    e->started_ns = now_ns();
    e->cmd = CMD_RUN;
    e->exit_workers = 0;
    for (int i = 0; i < e->cfg.threads; i++) {
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        void **arg = malloc(2 * sizeof(void *));
        int bad = !arg || pin(&attr, e->cfg.copy_cpus[i]) != 0;
        if (!bad) {
            arg[0] = e;
            arg[1] = (void *)(intptr_t)i;
            bad = pthread_create(&e->workers[i], &attr, worker_main, arg) != 0;
        }
        pthread_attr_destroy(&attr);
        if (bad) {
            free(arg);
            stop_workers(e);
            clear_gate(e);
            return PYSHM_ETHREAD;
        }
        e->nworkers = i + 1;
    }
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    int bad = pin(&attr, e->cfg.poll_cpu) != 0;
    if (!bad && e->cfg.poll_priority > 0) {
        /* a spinning SCHED_FIFO thread is never preempted by ordinary work: the lowest
         * lag a shared box allows (the kernel's RT throttling still leaves others 5%) */
        struct sched_param sp = {.sched_priority = e->cfg.poll_priority};
        bad = pthread_attr_setinheritsched(&attr, PTHREAD_EXPLICIT_SCHED) != 0 ||
              pthread_attr_setschedpolicy(&attr, SCHED_FIFO) != 0 ||
              pthread_attr_setschedparam(&attr, &sp) != 0;
    }
    __atomic_store_n(&e->state, PYSHM_ENGINE_RUNNING, __ATOMIC_RELEASE);
    int err = bad ? EINVAL : pthread_create(&e->poll, &attr, poll_main, e);
    pthread_attr_destroy(&attr);
    if (err) {
        stop_workers(e);
        clear_gate(e);
        __atomic_store_n(&e->state, PYSHM_ENGINE_CREATED, __ATOMIC_RELEASE);
        return err == EPERM && e->cfg.poll_priority ? PYSHM_EPRIORITY : PYSHM_ETHREAD;
    }
    e->poll_started = 1;
    return 0;
}

static int wait_state(pyshm_engine_t *e, int want, uint64_t timeout_ns) {
    uint64_t deadline = now_ns() + timeout_ns;
    for (;;) {
        int s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
        if (s == want) return 0;
        if (s == PYSHM_ENGINE_FAILED) return PYSHM_EFAILED;
        if (now_ns() >= deadline) return PYSHM_ETIMEDOUT;
        sleep_ns(20000);
    }
}

int pyshm_engine_pause(pyshm_engine_t *e, uint64_t timeout_ns) {
    int s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
    if (s == PYSHM_ENGINE_FAILED) return PYSHM_EFAILED;
    if (s != PYSHM_ENGINE_RUNNING && s != PYSHM_ENGINE_PAUSED) return PYSHM_ESTATE;
    __atomic_store_n(&e->cmd, CMD_PAUSE, __ATOMIC_RELEASE);
    if (e->cfg.wait == PYSHM_ENGINE_WAIT_BLOCK) pyshm_wake_sleepers(e->ring);
    return wait_state(e, PYSHM_ENGINE_PAUSED, timeout_ns);
}

int pyshm_engine_resume(pyshm_engine_t *e, uint64_t timeout_ns) {
    int s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
    if (s == PYSHM_ENGINE_FAILED) return PYSHM_EFAILED;
    if (s != PYSHM_ENGINE_RUNNING && s != PYSHM_ENGINE_PAUSED) return PYSHM_ESTATE;
    __atomic_store_n(&e->cmd, CMD_RUN, __ATOMIC_RELEASE);
    return wait_state(e, PYSHM_ENGINE_RUNNING, timeout_ns);
}

int pyshm_engine_sync(pyshm_engine_t *e, uint64_t timeout_ns) {
    int s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
    if (s == PYSHM_ENGINE_FAILED) return PYSHM_EFAILED;
    if (s != PYSHM_ENGINE_RUNNING && s != PYSHM_ENGINE_PAUSED) return PYSHM_ESTATE;
    uint64_t target = pyshm_load_acquire(&e->ring->tail.value);
    uint64_t deadline = now_ns() + timeout_ns;
    unsigned spins = 0;
    for (;;) {
        if (__atomic_load_n(&e->st.mirrored, __ATOMIC_ACQUIRE) >= target) return 0;
        if (__atomic_load_n(&e->state, __ATOMIC_ACQUIRE) == PYSHM_ENGINE_FAILED)
            return PYSHM_EFAILED;
        if (now_ns() >= deadline) return PYSHM_ETIMEDOUT;
        if (++spins < 200) cpu_relax();
        else if (spins < 400) sched_yield();
        else sleep_ns(10000);
    }
}

int pyshm_engine_stop(pyshm_engine_t *e, uint64_t timeout_ns) {
    int s = __atomic_load_n(&e->state, __ATOMIC_ACQUIRE);
    if (s == PYSHM_ENGINE_CREATED) {
        __atomic_store_n(&e->state, PYSHM_ENGINE_STOPPED, __ATOMIC_RELEASE);
        return 0;
    }
    if (!e->poll_started) return 0; /* already stopped and joined */
    __atomic_store_n(&e->cmd, CMD_STOP, __ATOMIC_RELEASE);
    if (e->cfg.wait == PYSHM_ENGINE_WAIT_BLOCK) pyshm_wake_sleepers(e->ring);
    if (s != PYSHM_ENGINE_FAILED) {
        int rc = wait_state(e, PYSHM_ENGINE_STOPPED, timeout_ns);
        if (rc == PYSHM_ETIMEDOUT) return rc;
    }
    pthread_join(e->poll, NULL);
    e->poll_started = 0;
    stop_workers(e);
    clear_gate(e);
    return 0;
}

int pyshm_engine_destroy(pyshm_engine_t *e) {
    if (!e) return 0;
    if (e->poll_started || e->nworkers) return PYSHM_ESTATE;
    pthread_mutex_destroy(&e->mu);
    pthread_cond_destroy(&e->cv);
    free(e);
    return 0;
}

int pyshm_numa_bind(void *addr, uint64_t len, int node, int *err) {
    *err = 0;
    if (node < 0 || node >= 1024) {
        *err = EINVAL;
        return PYSHM_EINVAL;
    }
    unsigned long mask[1024 / (8 * sizeof(unsigned long))];
    memset(mask, 0, sizeof(mask));
    mask[node / (8 * sizeof(unsigned long))] |= 1ul << (node % (8 * sizeof(unsigned long)));
#ifdef SYS_mbind
    /* MPOL_BIND = 2, MPOL_MF_MOVE = 2: bind future faults and migrate pages already there */
    long rc = syscall(SYS_mbind, addr, (unsigned long)len, 2, mask, 1024ul, 2u);
    if (rc != 0) {
        *err = errno;
        return PYSHM_ENUMA;
    }
    return 0;
#else
    (void)addr; (void)len;
    *err = ENOSYS;
    return PYSHM_ENUMA;
#endif
}
