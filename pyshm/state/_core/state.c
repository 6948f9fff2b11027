/*
 * pyshm state region core. See state.h for the contract, state_layout.h for the bytes
 * and docs/state.md for why each ordering is what it is.
 */
#define _GNU_SOURCE
#include "state.h"

#include <string.h>
#include <time.h>

#include "state_layout.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define SH(s) ((pyshm_state_header_t *)(s)->hdr)
#define CH(s) ((pyshm_state_chunk_t *)(s)->chunks)
#define CAS(p, e, d) pyshm_cas_acq_rel((p), (e), (d))

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* this thread's CPU time: a save's cost without the time the OS took the CPU away */
static uint64_t cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000ll + (int64_t)ts.tv_nsec;
}

/* Spin budget: the clock is read every 64 spins, so a wait costs no syscall-ish call per
 * iteration and still stops within spin_ns (+ 64 pauses). */
typedef struct {
    uint64_t start;
    uint32_t n;
} spin_t;

static inline int spin_expired(spin_t *sp, uint64_t budget)
{
    cpu_relax();
    if ((++sp->n & 63u) != 0) return 0;
    uint64_t now = mono_ns();
    if (!sp->start) {
        sp->start = now;
        return 0;
    }
    return now - sp->start > budget;
}

static inline void note_stall(pyshm_state_t *s, uint64_t ns)
{
    if (ns > s->max_stall_ns) s->max_stall_ns = ns;
}

/* ------------------------------------------------------------------ layout */

uint64_t pyshm_state_layout_offset(int which)
{
    switch (which) {
    case 0: return offsetof(pyshm_state_header_t, magic);
    case 1: return offsetof(pyshm_state_header_t, version);
    case 2: return offsetof(pyshm_state_header_t, flags);
    case 3: return offsetof(pyshm_state_header_t, row_count);
    case 4: return offsetof(pyshm_state_header_t, itemsize);
    case 5: return offsetof(pyshm_state_header_t, desc_length);
    case 6: return offsetof(pyshm_state_header_t, chunk_rows);
    case 7: return offsetof(pyshm_state_header_t, desc_crc);
    case 8: return offsetof(pyshm_state_header_t, created_ns);
    case 9: return offsetof(pyshm_state_header_t, creator_pid);
    case 10: return offsetof(pyshm_state_header_t, name);
    case 11: return offsetof(pyshm_state_header_t, header_crc);
    case 12: return offsetof(pyshm_state_header_t, epoch);
    case 13: return offsetof(pyshm_state_header_t, applied_seq);
    case 14: return offsetof(pyshm_state_header_t, writer.pid);
    case 15: return offsetof(pyshm_state_header_t, writer.slot);
    case 16: return offsetof(pyshm_state_header_t, writer.ring_id);
    case 17: return offsetof(pyshm_state_header_t, writer.heartbeat_ns);
    case 18: return offsetof(pyshm_state_header_t, cut.pid);
    case 19: return offsetof(pyshm_state_header_t, cut.gen);
    case 20: return offsetof(pyshm_state_header_t, cut.active);
    case 21: return offsetof(pyshm_state_header_t, cut.seq);
    case 22: return offsetof(pyshm_state_header_t, cut.epoch);
    case 23: return offsetof(pyshm_state_header_t, cut.started_ns);
    case 24: return offsetof(pyshm_state_header_t, handover.state);
    case 25: return offsetof(pyshm_state_header_t, handover.new_pid);
    case 26: return offsetof(pyshm_state_header_t, handover.old_pid);
    case 27: return offsetof(pyshm_state_header_t, handover.claim_pid);
    case 28: return offsetof(pyshm_state_header_t, handover.final_seq);
    case 29: return offsetof(pyshm_state_header_t, handover.ns);
    case 30: return offsetof(pyshm_state_header_t, identity.region_id);
    case 31: return offsetof(pyshm_state_header_t, identity.source_id);
    case 32: return offsetof(pyshm_state_header_t, identity.source_seq);
    case 33: return sizeof(pyshm_state_header_t);
    case 34: return sizeof(pyshm_state_chunk_t);
    case 35: return PYSHM_SPAN;
    case 36: return offsetof(pyshm_state_header_t, identity.retain_seq);
    case 37: return offsetof(pyshm_state_header_t, identity.retain_pos);
    case 38: return offsetof(pyshm_state_header_t, identity.retain_ring);
    default: return UINT64_MAX;
    }
}

typedef struct {
    uint64_t versions, chunks, rows, shadow_rows, shadow_versions, size, chunk_count;
} geometry_t;

static int geometry(uint64_t row_count, uint64_t itemsize, uint64_t desc_length,
                    uint64_t chunk_rows, geometry_t *g)
{
    if (row_count < 1 || row_count > PYSHM_STATE_MAX_ROWS) return PYSHM_STATE_E_CORRUPT;
    if (itemsize < 1 || itemsize > PYSHM_STATE_MAX_ITEMSIZE) return PYSHM_STATE_E_CORRUPT;
    if (desc_length < 2 || desc_length > PYSHM_STATE_MAX_DESC) return PYSHM_STATE_E_CORRUPT;
    if (chunk_rows < 1 || chunk_rows > PYSHM_STATE_MAX_ROWS ||
        chunk_rows * itemsize > ((uint64_t)1 << 30))
        return PYSHM_STATE_E_CORRUPT;
    /* row_count <= 2^40 and itemsize <= 2^20: every product below stays under 2^62 */
    g->chunk_count = (row_count + chunk_rows - 1) / chunk_rows;
    g->versions = PYSHM_STATE_HEADER_SIZE + pyshm_state_round_page(desc_length);
    g->chunks = g->versions + pyshm_state_round_page(8 * row_count);
    g->rows = g->chunks + pyshm_state_round_page(sizeof(pyshm_state_chunk_t) * g->chunk_count);
    g->shadow_rows = g->rows + pyshm_state_round_page(row_count * itemsize);
    g->shadow_versions = g->shadow_rows + pyshm_state_round_page(row_count * itemsize);
    g->size = g->shadow_versions + pyshm_state_round_page(8 * row_count);
    return PYSHM_STATE_OK;
}

int pyshm_state_geometry(uint64_t row_count, uint32_t itemsize, uint32_t desc_length,
                         uint32_t chunk_rows, uint64_t *out7)
{
    geometry_t g;
    int rc = geometry(row_count, itemsize, desc_length, chunk_rows, &g);
    if (rc) return rc;
    out7[0] = g.versions;
    out7[1] = g.chunks;
    out7[2] = g.rows;
    out7[3] = g.shadow_rows;
    out7[4] = g.shadow_versions;
    out7[5] = g.size;
    out7[6] = g.chunk_count;
    return PYSHM_STATE_OK;
}

int pyshm_state_open(pyshm_state_t *s, void *base, uint64_t mapped, uint64_t row_count,
                     uint32_t itemsize, uint32_t desc_length, uint32_t chunk_rows)
{
    memset(s, 0, sizeof(*s));
    if (!base || mapped < PYSHM_STATE_HEADER_SIZE) return PYSHM_STATE_E_CORRUPT;
    pyshm_state_header_t *h = (pyshm_state_header_t *)base;
    if (memcmp(h->magic, PYSHM_STATE_MAGIC, 8) != 0 || h->version != PYSHM_STATE_VERSION)
        return PYSHM_STATE_E_CORRUPT;
    /* the values Python validated must still be the header's */
    if (h->row_count != row_count || h->itemsize != itemsize ||
        h->desc_length != desc_length || h->chunk_rows != chunk_rows)
        return PYSHM_STATE_E_CORRUPT;
    geometry_t g;
    int rc = geometry(row_count, itemsize, desc_length, chunk_rows, &g);
    if (rc) return rc;
    if (mapped < g.size) return PYSHM_STATE_E_CORRUPT;
    uint8_t *b = (uint8_t *)base;
    s->hdr = base;
    s->versions = (uint64_t *)(b + g.versions);
    s->chunks = b + g.chunks;
    s->rows = b + g.rows;
    s->shadow_rows = b + g.shadow_rows;
    s->shadow_versions = (uint64_t *)(b + g.shadow_versions);
    s->row_count = row_count;
    s->itemsize = itemsize;
    s->chunk_rows = chunk_rows;
    s->chunk_count = g.chunk_count;
    s->spin_ns = 2000000; /* 2 ms: far above any legitimate wait (a chunk copy, a hold) */
    s->last_error_row = -1;
    return PYSHM_STATE_OK;
}

/* ------------------------------------------------------------------ header words */

static uint64_t *word(pyshm_state_t *s, int which)
{
    pyshm_state_header_t *h = SH(s);
    switch (which) {
    case PYSHM_SW_EPOCH: return &h->epoch.value;
    case PYSHM_SW_APPLIED: return &h->applied_seq.value;
    case PYSHM_SW_W_PID: return (uint64_t *)&h->writer.pid;
    case PYSHM_SW_W_SLOT: return (uint64_t *)&h->writer.slot;
    case PYSHM_SW_W_RING_ID: return &h->writer.ring_id;
    case PYSHM_SW_W_HEARTBEAT: return (uint64_t *)&h->writer.heartbeat_ns;
    case PYSHM_SW_C_PID: return (uint64_t *)&h->cut.pid;
    case PYSHM_SW_C_GEN: return &h->cut.gen;
    case PYSHM_SW_C_ACTIVE: return &h->cut.active;
    case PYSHM_SW_C_SEQ: return &h->cut.seq;
    case PYSHM_SW_C_EPOCH: return &h->cut.epoch;
    case PYSHM_SW_C_STARTED: return (uint64_t *)&h->cut.started_ns;
    case PYSHM_SW_H_STATE: return &h->handover.state;
    case PYSHM_SW_H_NEW_PID: return (uint64_t *)&h->handover.new_pid;
    case PYSHM_SW_H_OLD_PID: return (uint64_t *)&h->handover.old_pid;
    case PYSHM_SW_H_CLAIM: return &h->handover.claim_pid;
    case PYSHM_SW_H_FINAL: return &h->handover.final_seq;
    case PYSHM_SW_H_NS: return (uint64_t *)&h->handover.ns;
    case PYSHM_SW_I_REGION: return &h->identity.region_id;
    case PYSHM_SW_I_SOURCE: return &h->identity.source_id;
    case PYSHM_SW_I_SOURCE_SEQ: return &h->identity.source_seq;
    case PYSHM_SW_I_RETAIN_SEQ: return &h->identity.retain_seq;
    case PYSHM_SW_I_RETAIN_POS: return &h->identity.retain_pos;
    case PYSHM_SW_I_RETAIN_RING: return &h->identity.retain_ring;
    default: return NULL;
    }
}

uint64_t pyshm_state_load(const pyshm_state_t *s, int which)
{
    uint64_t *p = word((pyshm_state_t *)s, which);
    return p ? pyshm_load_acquire(p) : 0;
}

void pyshm_state_store(pyshm_state_t *s, int which, uint64_t value)
{
    uint64_t *p = word(s, which);
    if (p) pyshm_store_release(p, value);
}

int pyshm_state_cas(pyshm_state_t *s, int which, uint64_t *expected, uint64_t desired)
{
    uint64_t *p = word(s, which);
    if (!p) return 0;
    return CAS(p, expected, desired) ? 1 : 0;
}

/* ------------------------------------------------------------------ writer */

/* A cut is fixed at an even epoch e while the epoch word reads e | CUT: no transaction
 * can begin or commit then, so applied_seq is stable and everyone who looks computes the
 * same cut (generation from cut.gen, published before the CUT bit was set). Both the
 * cut's owner and a writer that finds the bit store these values (identical, in any
 * order) before clearing the bit: the writer never waits for the cut's owner. */
static void fix_cut(pyshm_state_header_t *h, uint64_t e, uint64_t gen, uint64_t seq)
{
    pyshm_store_relaxed(&h->cut.seq, seq);
    pyshm_store_relaxed(&h->cut.epoch, e);
    pyshm_store_release(&h->cut.active, gen);
}

int pyshm_state_begin(pyshm_state_t *s)
{
    if (s->in_tx) return PYSHM_STATE_E_TX;
    pyshm_state_header_t *h = SH(s);
    uint64_t *ep = &h->epoch.value;
    for (;;) {
        uint64_t e = pyshm_load_acquire(ep);
        if (e & PYSHM_STATE_EPOCH_CUT) {
            /* a cut being fixed (its owner may be descheduled, or dead): finish it
             * here and begin in the same step */
            uint64_t base = e & ~PYSHM_STATE_EPOCH_CUT;
            fix_cut(h, base, pyshm_load_acquire(&h->cut.gen),
                    pyshm_load_acquire(&h->applied_seq.value));
            if (CAS(ep, &e, base + 1)) {
                s->cuts_fixed++;
                s->epoch = base + 1;
                s->in_tx = 1;
                return PYSHM_STATE_OK;
            }
            continue;
        }
        if (e & 1u) {
            /* a transaction is open: another writer's, or one a dead writer left */
            s->last_error_value = e;
            return PYSHM_STATE_E_TX;
        }
        if (CAS(ep, &e, e + 1)) {
            s->epoch = e + 1;
            s->in_tx = 1;
            return PYSHM_STATE_OK;
        }
    }
}

int pyshm_state_commit(pyshm_state_t *s, uint64_t seq, int set_seq)
{
    if (!s->in_tx) {
        int rc = pyshm_state_begin(s);
        if (rc) return rc;
    }
    pyshm_state_header_t *h = SH(s);
    if (set_seq) pyshm_store_release(&h->applied_seq.value, seq);
    /* nobody else moves an odd epoch (a cut only holds an even one) */
    pyshm_store_release(&h->epoch.value, s->epoch + 1);
    s->in_tx = 0;
    s->commits++;
    return PYSHM_STATE_OK;
}

/* Before the first write into chunk c during a cut: unless the cut already has the
 * chunk (copied, or saved by us), save its pre-image (rows and versions) into the shadow
 * area and mark it saved. A chunk the cut is copying at that moment is taken over the
 * same way: the cut then finds it saved and takes the shadow copy instead of what it
 * read (which our writes may have torn). Never waits. */
static void cow_chunk(pyshm_state_t *s, uint64_t c, uint64_t gen)
{
    pyshm_state_chunk_t *ce = &CH(s)[c];
    uint64_t f = pyshm_load_acquire(&ce->cow);
    if ((f >> 2) == gen && (f & 3u) != PYSHM_CHUNK_COPYING) return; /* copied or saved */
    uint64_t t = mono_ns(), tc = cpu_ns();
    uint64_t first = c * s->chunk_rows;
    uint64_t n = s->row_count - first < s->chunk_rows ? s->row_count - first : s->chunk_rows;
    memcpy(s->shadow_rows + first * s->itemsize, s->rows + first * s->itemsize,
           n * s->itemsize);
    for (uint64_t i = 0; i < n; i++)
        s->shadow_versions[first + i] = pyshm_load_relaxed(&s->versions[first + i]);
    /* the CAS releases the pre-image to the cut (which acquires the flag before it reads
     * the shadow); our row writes come after it */
    for (;;) {
        if (CAS(&ce->cow, &f, (gen << 2) | PYSHM_CHUNK_SAVED)) {
            if ((f >> 2) == gen) s->chunks_taken++; /* it was the cut's, being copied */
            break;
        }
        if ((f >> 2) == gen && (f & 3u) == PYSHM_CHUNK_COPIED) break; /* it finished first */
        /* f is now COPYING (claimed meanwhile): take it over */
    }
    uint64_t w = mono_ns() - t, wc = cpu_ns() - tc;
    s->cow_chunks++;
    s->cow_ns += w;
    s->cow_cpu_ns += wc;
    note_stall(s, w);
    if (wc > s->max_stall_cpu_ns) s->max_stall_cpu_ns = wc;
}

static inline int prepare_row(pyshm_state_t *s, uint64_t row)
{
    uint64_t c = row / s->chunk_rows;
    uint64_t gen = pyshm_load_acquire(&SH(s)->cut.active);
    if (__builtin_expect(gen != 0, 0)) cow_chunk(s, c, gen);
    pyshm_state_chunk_t *ce = &CH(s)[c];
    if (pyshm_load_relaxed(&ce->dirty_epoch) != s->epoch)
        pyshm_store_relaxed(&ce->dirty_epoch, s->epoch);
    return PYSHM_STATE_OK;
}

/* The seqlock write of one row. An odd version left by a dead writer stays odd during
 * the copy and becomes even after it (v | 1, then + 1). */
static inline void put_row(pyshm_state_t *s, uint64_t row, const uint8_t *src)
{
    uint64_t *vp = &s->versions[row];
    uint64_t odd = pyshm_load_relaxed(vp) | 1u;
    pyshm_store_relaxed(vp, odd);
    pyshm_fence_release();
    memcpy(s->rows + row * s->itemsize, src, s->itemsize);
    pyshm_store_release(vp, odd + 1);
}

int pyshm_state_prepare_row(pyshm_state_t *s, uint64_t row)
{
    if (row >= s->row_count || !s->in_tx) return PYSHM_STATE_E_PARAM;
    return prepare_row(s, row);
}

void pyshm_state_put_row_version(pyshm_state_t *s, uint64_t row, const uint8_t *src,
                                 uint64_t version)
{
    uint64_t *vp = &s->versions[row];
    uint64_t odd = pyshm_load_relaxed(vp) | 1u;
    pyshm_store_relaxed(vp, odd);
    pyshm_fence_release();
    memcpy(s->rows + row * s->itemsize, src, s->itemsize);
    pyshm_store_release(vp, version & ~(uint64_t)1u);
}

int pyshm_state_write(pyshm_state_t *s, uint64_t row, const uint8_t *src, int autocommit)
{
    if (row >= s->row_count) {
        s->last_error_row = (int64_t)row;
        return PYSHM_STATE_E_PARAM;
    }
    if (!s->in_tx) {
        int rc = pyshm_state_begin(s);
        if (rc) return rc;
    }
    int rc = prepare_row(s, row);
    if (rc) return rc;
    put_row(s, row, src);
    s->writes++;
    return autocommit ? pyshm_state_commit(s, 0, 0) : PYSHM_STATE_OK;
}

int64_t pyshm_state_write_many(pyshm_state_t *s, const uint64_t *rows, const uint8_t *src,
                               uint64_t n, int autocommit)
{
    /* every index first: a bad one writes nothing */
    for (uint64_t k = 0; k < n; k++) {
        if (rows[k] >= s->row_count) {
            s->last_error_row = (int64_t)rows[k];
            return PYSHM_STATE_E_PARAM;
        }
    }
    if (!s->in_tx) {
        int rc = pyshm_state_begin(s);
        if (rc) return rc;
    }
    for (uint64_t k = 0; k < n; k++) {
        int rc = prepare_row(s, rows[k]);
        if (rc) return rc;
        put_row(s, rows[k], src + k * s->itemsize);
    }
    s->writes += n;
    if (autocommit) {
        int rc = pyshm_state_commit(s, 0, 0);
        if (rc) return rc;
    }
    return (int64_t)n;
}

int64_t pyshm_state_write_range(pyshm_state_t *s, uint64_t start, const uint8_t *src,
                                uint64_t n, int autocommit)
{
    if (start > s->row_count || n > s->row_count - start) {
        s->last_error_row = (int64_t)(start + n);
        return PYSHM_STATE_E_PARAM;
    }
    if (!s->in_tx) {
        int rc = pyshm_state_begin(s);
        if (rc) return rc;
    }
    for (uint64_t k = 0; k < n; k++) {
        int rc = prepare_row(s, start + k);
        if (rc) return rc;
        put_row(s, start + k, src + k * s->itemsize);
    }
    s->writes += n;
    if (autocommit) {
        int rc = pyshm_state_commit(s, 0, 0);
        if (rc) return rc;
    }
    return (int64_t)n;
}

int64_t pyshm_state_sync_rows(pyshm_state_t *s, const uint8_t *src)
{
    if (!s->in_tx) {
        int rc = pyshm_state_begin(s);
        if (rc) return rc;
    }
    int64_t written = 0;
    for (uint64_t r = 0; r < s->row_count; r++) {
        /* our own rows: nobody else writes them, a plain compare is exact */
        if (memcmp(s->rows + r * s->itemsize, src + r * s->itemsize, s->itemsize) == 0)
            continue;
        prepare_row(s, r);
        put_row(s, r, src + r * s->itemsize);
        written++;
    }
    s->writes += (uint64_t)written;
    return written;
}

int64_t pyshm_state_reset_dead_writer(pyshm_state_t *s)
{
    uint64_t e = pyshm_load_acquire(&SH(s)->epoch.value);
    if (!(e & 1u)) return 0;
    int64_t odd = 0;
    for (uint64_t i = 0; i < s->row_count; i++)
        odd += (int64_t)(pyshm_load_relaxed(&s->versions[i]) & 1u);
    /* adopt the open transaction: the epoch stays odd (readers keep seeing "in
     * progress") until the caller has rewritten the rows and commits */
    s->epoch = e;
    s->in_tx = 1;
    return odd;
}

/* ------------------------------------------------------------------ readers */

int pyshm_state_read(pyshm_state_t *s, uint64_t row, uint8_t *dst)
{
    if (row >= s->row_count) {
        s->last_error_row = (int64_t)row;
        return PYSHM_STATE_E_PARAM;
    }
    uint64_t *vp = &s->versions[row];
    const uint8_t *src = s->rows + row * s->itemsize;
    spin_t sp = {0, 0};
    for (;;) {
        uint64_t v1 = pyshm_load_acquire(vp);
        if (!(v1 & 1u)) {
            memcpy(dst, src, s->itemsize);
            pyshm_fence_acquire();
            if (pyshm_load_relaxed(vp) == v1) return PYSHM_STATE_OK;
        }
        if (spin_expired(&sp, s->spin_ns)) {
            s->last_error_row = (int64_t)row;
            return PYSHM_STATE_E_BUSY;
        }
    }
}

int64_t pyshm_state_read_many(pyshm_state_t *s, const uint64_t *rows, uint8_t *dst,
                              uint64_t n)
{
    for (uint64_t k = 0; k < n; k++) {
        if (rows[k] >= s->row_count) {
            s->last_error_row = (int64_t)rows[k];
            return PYSHM_STATE_E_PARAM;
        }
    }
    for (uint64_t k = 0; k < n; k++) {
        int rc = pyshm_state_read(s, rows[k], dst + k * s->itemsize);
        if (rc) return rc;
    }
    return (int64_t)n;
}

int pyshm_state_read_all(pyshm_state_t *s, uint8_t *dst, uint64_t *versions,
                         uint64_t *seq_out, uint64_t *epoch_out)
{
    pyshm_state_header_t *h = SH(s);
    uint64_t deadline = 0;
    for (;;) {
        /* a cut being fixed keeps the epoch even and the rows still: reading through it
         * is fine, so the cut bit is ignored when the two loads are compared */
        uint64_t e1 = pyshm_load_acquire(&h->epoch.value);
        if (!(e1 & 1u)) {
            uint64_t seq = pyshm_load_acquire(&h->applied_seq.value);
            memcpy(dst, s->rows, s->row_count * s->itemsize);
            if (versions) memcpy(versions, s->versions, s->row_count * 8);
            pyshm_fence_acquire();
            uint64_t e2 = pyshm_load_relaxed(&h->epoch.value);
            if ((e1 & ~PYSHM_STATE_EPOCH_CUT) == (e2 & ~PYSHM_STATE_EPOCH_CUT)) {
                *seq_out = seq;
                *epoch_out = e1 & ~PYSHM_STATE_EPOCH_CUT;
                return PYSHM_STATE_OK;
            }
        } else {
            cpu_relax();
        }
        /* one attempt copies the whole region: look at the clock after each */
        uint64_t now = mono_ns();
        if (!deadline) deadline = now + s->spin_ns;
        else if (now > deadline) {
            s->last_error_value = e1;
            return PYSHM_STATE_E_RETRY;
        }
    }
}

/* ------------------------------------------------------------------ cuts */

int pyshm_state_cut_begin(pyshm_state_t *s, int64_t pid)
{
    pyshm_state_header_t *h = SH(s);
    int64_t owner = 0;
    if (!CAS(&h->cut.pid, &owner, pid)) {
        s->last_error_value = (uint64_t)owner;
        return PYSHM_STATE_E_CUT;
    }
    /* a cut bit left by a dead owner: clear it before our generation is published (a
     * writer that finishes it first does so with that owner's generation: harmless) */
    uint64_t e = pyshm_load_acquire(&h->epoch.value);
    if (e & PYSHM_STATE_EPOCH_CUT) {
        CAS(&h->epoch.value, &e, e & ~PYSHM_STATE_EPOCH_CUT);
        pyshm_store_release(&h->cut.active, 0);
    }
    uint64_t gen = pyshm_load_relaxed(&h->cut.gen) + 1;
    pyshm_store_release(&h->cut.gen, gen);
    spin_t sp = {0, 0};
    uint64_t seq;
    for (;;) {
        e = pyshm_load_acquire(&h->epoch.value);
        if (!(e & 1u) && !(e & PYSHM_STATE_EPOCH_CUT)) {
            /* read before the CAS: if the epoch is still e at the CAS, nothing was
             * committed in between, so this is the applied_seq of epoch e */
            seq = pyshm_load_acquire(&h->applied_seq.value);
            if (CAS(&h->epoch.value, &e, e | PYSHM_STATE_EPOCH_CUT)) break;
            continue;
        }
        if (spin_expired(&sp, s->spin_ns)) {
            /* the writer stayed inside one transaction: give up this attempt */
            pyshm_store_release(&h->cut.pid, 0);
            s->last_error_value = e;
            return PYSHM_STATE_E_TX;
        }
    }
    uint64_t t = mono_ns();
    fix_cut(h, e, gen, seq);
    uint64_t fixed = e | PYSHM_STATE_EPOCH_CUT;
    /* fails when a writer finished the cut for us meanwhile: same values, moved on */
    CAS(&h->epoch.value, &fixed, e);
    s->hold_ns = mono_ns() - t;
    s->cut_gen = gen;
    s->cut_seq = seq;
    s->cut_epoch = e;
    pyshm_store_relaxed(&h->cut.started_ns, wall_ns());
    s->copied_live = s->copied_shadow = 0;
    return PYSHM_STATE_OK;
}

/* Claim chunk c for the cut (gen) and copy it into dst_rows/dst_versions: from the live
 * rows if the writer does not touch it meanwhile, else from the pre-image it saved.
 * Returns 0 live, 1 shadow, < 0 error. */
static int copy_chunk(pyshm_state_t *s, uint64_t c, uint64_t gen, uint8_t *dst_rows,
                      uint64_t *dst_versions)
{
    pyshm_state_chunk_t *ce = &CH(s)[c];
    uint64_t isz = s->itemsize;
    uint64_t first = c * s->chunk_rows;
    uint64_t n = s->row_count - first < s->chunk_rows ? s->row_count - first : s->chunk_rows;
    uint64_t f = pyshm_load_acquire(&ce->cow);
    for (;;) {
        if ((f >> 2) == gen) {
            uint64_t st = f & 3u;
            if (st == PYSHM_CHUNK_SAVED) goto shadow;
            if (st == PYSHM_CHUNK_COPIED) return PYSHM_STATE_E_CUT; /* copied twice */
            break; /* COPYING: ours already */
        }
        if (CAS(&ce->cow, &f, (gen << 2) | PYSHM_CHUNK_COPYING)) break;
    }
    memcpy(dst_rows + first * isz, s->rows + first * isz, n * isz);
    if (dst_versions)
        for (uint64_t i = 0; i < n; i++)
            dst_versions[first + i] = pyshm_load_relaxed(&s->versions[first + i]);
    f = (gen << 2) | PYSHM_CHUNK_COPYING;
    if (CAS(&ce->cow, &f, (gen << 2) | PYSHM_CHUNK_COPIED)) return 0;
    /* the writer took the chunk while we copied: its saved pre-image is the cut's */
shadow:
    memcpy(dst_rows + first * isz, s->shadow_rows + first * isz, n * isz);
    if (dst_versions) memcpy(dst_versions + first, s->shadow_versions + first, n * 8);
    return 1;
}

int64_t pyshm_state_cut_copy(pyshm_state_t *s, uint8_t *dst_rows, uint64_t *dst_versions)
{
    uint64_t gen = s->cut_gen;
    if (!gen || pyshm_load_acquire(&SH(s)->cut.active) != gen) return PYSHM_STATE_E_CUT;
    for (uint64_t c = 0; c < s->chunk_count; c++) {
        int rc = copy_chunk(s, c, gen, dst_rows, dst_versions);
        if (rc < 0) return rc;
        if (rc) s->copied_shadow++;
        else s->copied_live++;
    }
    return (int64_t)s->chunk_count;
}

int pyshm_state_cut_end(pyshm_state_t *s, int64_t pid)
{
    pyshm_state_header_t *h = SH(s);
    uint64_t gen = s->cut_gen;
    if (gen && pyshm_load_acquire(&h->cut.active) == gen)
        pyshm_store_release(&h->cut.active, 0);
    s->cut_gen = 0;
    int64_t owner = pid;
    return CAS(&h->cut.pid, &owner, 0) ? PYSHM_STATE_OK : PYSHM_STATE_E_CUT;
}

int pyshm_state_cut_abandon(pyshm_state_t *s, int64_t dead_pid)
{
    pyshm_state_header_t *h = SH(s);
    if (dead_pid == 0 || pyshm_load_acquire(&h->cut.pid) != dead_pid) return 0;
    /* writers stop saving pre-images for the dead cut */
    pyshm_store_release(&h->cut.active, 0);
    uint64_t e = pyshm_load_acquire(&h->epoch.value);
    if (e & PYSHM_STATE_EPOCH_CUT) CAS(&h->epoch.value, &e, e & ~PYSHM_STATE_EPOCH_CUT);
    int64_t owner = dead_pid;
    return CAS(&h->cut.pid, &owner, 0) ? 1 : 0;
}
