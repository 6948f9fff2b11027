/*
 * pyshm state mirror: the CPU engine for state regions. See state_mirror.h.
 */
#define _GNU_SOURCE
#include "state_mirror.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "state_layout.h"

#define SH(s) ((pyshm_state_header_t *)(s)->hdr)
#define CH(s) ((pyshm_state_chunk_t *)(s)->chunks)
#define AL(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define AS(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)

enum { CMD_RUN = 0, CMD_PAUSE = 1, CMD_STOP = 2 };

struct pyshm_mirror {
    pyshm_state_t *src;
    pyshm_state_t *rep;
    int64_t pid;
    uint64_t max_sleep_ns;
    pthread_t thread;
    int thread_started;
    int cmd;                 /* CMD_*, written by API calls */
    int in_round;            /* the thread is inside a round */
    uint64_t last_epoch;     /* source epoch covered by the replica; valid if synced */
    int synced;              /* the replica is a copy of this source at last_epoch */
    uint64_t parity;         /* PYSHM_STATE_PARITY or 0: the replica's current parity */
    uint64_t pending_ns;     /* when a source change was first seen unmirrored */
    uint64_t started_ns;
    uint64_t st_taken;       /* chunks the writer took from under a round */
    uint8_t *row;            /* one row, read with the source's seqlock */
    pyshm_mirror_stats_t st;
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ns(uint64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    nanosleep(&ts, NULL);
}

static int pid_dead(int64_t pid)
{
    if (pid <= 0 || pid > 0x7fffffff) return 1;
    return kill((pid_t)pid, 0) == -1 && errno == ESRCH;
}

int pyshm_mirror_create(pyshm_state_t *src, pyshm_state_t *rep, int64_t pid,
                        uint64_t max_sleep_ns, pyshm_mirror_t **out)
{
    *out = NULL;
    if (!src || !rep || !src->hdr || !rep->hdr) return PYSHM_STATE_E_PARAM;
    if (src->row_count != rep->row_count || src->itemsize != rep->itemsize)
        return PYSHM_MIRROR_E_MISMATCH;
    pyshm_mirror_t *m = calloc(1, sizeof(*m));
    if (!m) return PYSHM_MIRROR_E_NOMEM;
    m->row = malloc(src->itemsize);
    if (!m->row) {
        free(m);
        return PYSHM_MIRROR_E_NOMEM;
    }
    m->src = src;
    m->rep = rep;
    m->pid = pid;
    m->max_sleep_ns = max_sleep_ns ? max_sleep_ns : 50000;
    m->st.state = PYSHM_MIRROR_CREATED;
    /* a replica whose last round committed for this very source continues
     * incrementally: every chunk written at all is compared once, rows equal in version
     * are left alone */
    pyshm_state_header_t *rh = SH(rep);
    uint64_t re = pyshm_load_acquire(&rh->epoch.value);
    if (!(re & 1u) &&
        pyshm_load_acquire(&rh->identity.source_id) ==
            pyshm_load_acquire(&SH(src)->identity.region_id) &&
        pyshm_load_acquire(&rh->identity.source_id) != 0) {
        m->synced = 1;
        m->last_epoch = 0;
        m->parity = pyshm_load_relaxed(&rep->versions[0]) & PYSHM_STATE_PARITY;
    }
    m->st.consistent_seq = pyshm_load_acquire(&rh->applied_seq.value);
    *out = m;
    return PYSHM_STATE_OK;
}

static int mirror_rows(pyshm_mirror_t *m, uint64_t first, uint64_t n, const uint8_t *rows,
                       const uint64_t *vers, uint64_t parity, int full, uint64_t *copied)
{
    pyshm_state_t *rep = m->rep;
    uint64_t isz = m->src->itemsize;
    for (uint64_t r = first; r < first + n; r++) {
        uint64_t sv = pyshm_load_relaxed(&vers[r]) & ~PYSHM_STATE_PARITY;
        uint64_t rv = pyshm_load_relaxed(&rep->versions[r]);
        if (!full && (rv & ~PYSHM_STATE_PARITY) == sv && (rv & PYSHM_STATE_PARITY) == parity)
            continue;
        int rc = pyshm_state_prepare_row(rep, r);
        if (rc) return rc;
        pyshm_state_put_row_version(rep, r, rows + r * isz, sv | parity);
        (*copied)++;
    }
    return PYSHM_STATE_OK;
}

/* Mirror chunk c of the cut (gen): from the live rows, each read with its seqlock,
 * unless the writer takes the chunk meanwhile (its first write during the cut saves the
 * pre-image and marks the chunk saved, even from under us); then again from the saved
 * pre-image, which is the cut's. The writer never waits for this. */
static int mirror_chunk(pyshm_mirror_t *m, uint64_t c, uint64_t gen, uint64_t parity,
                        int full, uint64_t *copied)
{
    pyshm_state_t *src = m->src, *rep = m->rep;
    pyshm_state_chunk_t *ce = &CH(src)[c];
    uint64_t isz = src->itemsize;
    uint64_t first = c * src->chunk_rows;
    uint64_t n = src->row_count - first < src->chunk_rows ? src->row_count - first
                                                           : src->chunk_rows;
    uint64_t f = pyshm_load_acquire(&ce->cow);
    for (;;) {
        if ((f >> 2) == gen) {
            if ((f & 3u) == PYSHM_CHUNK_SAVED)
                return mirror_rows(m, first, n, src->shadow_rows, src->shadow_versions,
                                   parity, full, copied);
            if ((f & 3u) == PYSHM_CHUNK_COPIED) return PYSHM_STATE_OK; /* done already */
            break; /* COPYING: ours */
        }
        if (pyshm_cas_acq_rel(&ce->cow, &f, (gen << 2) | PYSHM_CHUNK_COPYING)) break;
    }
    int torn = 0;
    for (uint64_t r = first; r < first + n && !torn; r++) {
        uint64_t v1 = pyshm_load_acquire(&src->versions[r]);
        if (v1 & 1u) {
            torn = 1; /* being written: the writer has taken the chunk */
            break;
        }
        uint64_t sv = v1 & ~PYSHM_STATE_PARITY;
        uint64_t rv = pyshm_load_relaxed(&rep->versions[r]);
        if (!full && (rv & ~PYSHM_STATE_PARITY) == sv && (rv & PYSHM_STATE_PARITY) == parity)
            continue;
        memcpy(m->row, src->rows + r * isz, isz);
        pyshm_fence_acquire();
        if (pyshm_load_relaxed(&src->versions[r]) != v1) {
            torn = 1;
            break;
        }
        int rc = pyshm_state_prepare_row(rep, r);
        if (rc) return rc;
        pyshm_state_put_row_version(rep, r, m->row, sv | parity);
        (*copied)++;
    }
    if (!torn) {
        f = (gen << 2) | PYSHM_CHUNK_COPYING;
        if (pyshm_cas_acq_rel(&ce->cow, &f, (gen << 2) | PYSHM_CHUNK_COPIED))
            return PYSHM_STATE_OK;
    }
    /* taken by the writer (it marks the chunk saved before its first row write, so the
     * mark is visible once we saw that write): its pre-image rewrites whatever we
     * copied after the cut */
    f = pyshm_load_acquire(&ce->cow);
    if ((f & 3u) != PYSHM_CHUNK_SAVED || (f >> 2) != gen) return PYSHM_STATE_E_CORRUPT;
    m->st_taken++;
    return mirror_rows(m, first, n, src->shadow_rows, src->shadow_versions, parity, full,
                       copied);
}

/* 0 nothing new, 1 postponed (busy), 2 a round ran, < 0 error */
static int round_once(pyshm_mirror_t *m)
{
    pyshm_state_t *src = m->src, *rep = m->rep;
    pyshm_state_header_t *sh = SH(src), *rh = SH(rep);
    uint64_t e_now = pyshm_load_acquire(&sh->epoch.value) & ~PYSHM_STATE_EPOCH_CUT;
    uint64_t src_id = pyshm_load_acquire(&sh->identity.region_id);
    int full = !m->synced || pyshm_load_acquire(&rh->identity.source_id) != src_id;
    if (!full && e_now == m->last_epoch) {
        m->pending_ns = 0;
        return 0;
    }
    uint64_t t0 = mono_ns();
    if (!m->pending_ns) m->pending_ns = t0;
    int rc = pyshm_state_cut_begin(src, m->pid);
    if (rc == PYSHM_STATE_E_CUT) {
        int64_t owner = (int64_t)src->last_error_value;
        if (owner != m->pid && pid_dead(owner)) pyshm_state_cut_abandon(src, owner);
        AS(&m->st.busy_retries, m->st.busy_retries + 1);
        return 1;
    }
    if (rc == PYSHM_STATE_E_TX) {
        AS(&m->st.busy_retries, m->st.busy_retries + 1);
        return 1;
    }
    if (rc) return rc;
    uint64_t gen = src->cut_gen, seq = src->cut_seq, e = src->cut_epoch;
    uint64_t parity = m->parity;
    if (full) parity = (pyshm_load_relaxed(&rep->versions[0]) & PYSHM_STATE_PARITY) ^
                       PYSHM_STATE_PARITY;
    /* a transaction adopted from a mirror that died mid-round stays open: this round
     * (a full one: create saw the odd epoch) closes it */
    rc = rep->in_tx ? PYSHM_STATE_OK : pyshm_state_begin(rep);
    if (rc) {
        pyshm_state_cut_end(src, m->pid);
        return rc;
    }
    uint64_t isz = src->itemsize, copied = 0, scanned = 0;
    for (uint64_t c = 0; c < src->chunk_count; c++) {
        if (!full && pyshm_load_acquire(&CH(src)[c].dirty_epoch) <= m->last_epoch) continue;
        scanned++;
        rc = mirror_chunk(m, c, gen, parity, full, &copied);
        if (rc) break;
    }
    if (rc) {
        /* the replica stays inside its transaction (odd epoch: "not consistent") and
         * the source cut is closed; the caller reports the error */
        pyshm_state_cut_end(src, m->pid);
        return rc;
    }
    pyshm_store_release(&rh->identity.source_id, src_id);
    pyshm_store_release(&rh->identity.source_seq, seq);
    pyshm_state_commit(rep, seq, 1);
    pyshm_state_cut_end(src, m->pid);
    m->synced = 1;
    m->parity = parity;
    uint64_t t1 = mono_ns();
    AS(&m->last_epoch, e);
    AS(&m->st.consistent_seq, seq);
    AS(&m->st.last_epoch, e);
    AS(&m->st.rounds, m->st.rounds + 1);
    if (full) AS(&m->st.full_resyncs, m->st.full_resyncs + 1);
    AS(&m->st.rows_copied, m->st.rows_copied + copied);
    AS(&m->st.bytes_copied, m->st.bytes_copied + copied * (isz + 8));
    AS(&m->st.chunks_scanned, m->st.chunks_scanned + scanned);
    AS(&m->st.last_round_ns, t1 - t0);
    if (t1 - t0 > m->st.max_round_ns) AS(&m->st.max_round_ns, t1 - t0);
    AS(&m->st.busy_ns, m->st.busy_ns + (t1 - t0));
    AS(&m->st.lag_ns, t1 - m->pending_ns);
    m->pending_ns = 0;
    return 2;
}

static void *run(void *arg)
{
    pyshm_mirror_t *m = arg;
    uint64_t sleep = 1000;
    for (;;) {
        int cmd = __atomic_load_n(&m->cmd, __ATOMIC_ACQUIRE);
        if (cmd == CMD_STOP) break;
        if (cmd == CMD_PAUSE) {
            AS(&m->st.state, PYSHM_MIRROR_PAUSED);
            sleep_ns(50000);
            continue;
        }
        AS(&m->st.state, PYSHM_MIRROR_RUNNING);
        __atomic_store_n(&m->in_round, 1, __ATOMIC_RELEASE);
        int rc = round_once(m);
        __atomic_store_n(&m->in_round, 0, __ATOMIC_RELEASE);
        if (rc < 0) {
            AS(&m->st.last_error, rc);
            AS(&m->st.state, PYSHM_MIRROR_FAILED);
            return NULL;
        }
        if (rc == 2) {
            sleep = 1000;
        } else {
            sleep_ns(rc == 1 ? 20000 : sleep);
            if (rc == 0 && sleep < m->max_sleep_ns) sleep *= 2;
        }
        AS(&m->st.elapsed_ns, mono_ns() - m->started_ns);
    }
    AS(&m->st.state, PYSHM_MIRROR_STOPPED);
    return NULL;
}

int pyshm_mirror_start(pyshm_mirror_t *m)
{
    if (m->thread_started) return PYSHM_MIRROR_E_STATE;
    m->started_ns = mono_ns();
    __atomic_store_n(&m->cmd, CMD_RUN, __ATOMIC_RELEASE);
    AS(&m->st.state, PYSHM_MIRROR_RUNNING);
    if (pthread_create(&m->thread, NULL, run, m) != 0) {
        AS(&m->st.state, PYSHM_MIRROR_FAILED);
        return PYSHM_MIRROR_E_THREAD;
    }
    m->thread_started = 1;
    return PYSHM_STATE_OK;
}

static int wait_for_state(pyshm_mirror_t *m, int want, uint64_t timeout_ns)
{
    uint64_t deadline = mono_ns() + timeout_ns;
    for (;;) {
        int s = AL(&m->st.state);
        if (s == want && !__atomic_load_n(&m->in_round, __ATOMIC_ACQUIRE)) return 0;
        if (s == PYSHM_MIRROR_FAILED) return AL(&m->st.last_error);
        if (mono_ns() > deadline) return PYSHM_MIRROR_E_TIMEOUT;
        sleep_ns(20000);
    }
}

int pyshm_mirror_pause(pyshm_mirror_t *m, uint64_t timeout_ns)
{
    if (!m->thread_started) return PYSHM_MIRROR_E_STATE;
    __atomic_store_n(&m->cmd, CMD_PAUSE, __ATOMIC_RELEASE);
    return wait_for_state(m, PYSHM_MIRROR_PAUSED, timeout_ns);
}

int pyshm_mirror_resume(pyshm_mirror_t *m, uint64_t timeout_ns)
{
    if (!m->thread_started) return PYSHM_MIRROR_E_STATE;
    __atomic_store_n(&m->cmd, CMD_RUN, __ATOMIC_RELEASE);
    return wait_for_state(m, PYSHM_MIRROR_RUNNING, timeout_ns);
}

int pyshm_mirror_sync(pyshm_mirror_t *m, uint64_t timeout_ns)
{
    uint64_t e = pyshm_load_acquire(&SH(m->src)->epoch.value) & ~PYSHM_STATE_EPOCH_CUT;
    uint64_t target = (e & 1u) ? e + 1 : e; /* an open transaction: its commit */
    uint64_t deadline = mono_ns() + timeout_ns;
    for (;;) {
        if (AL(&m->synced) && AL(&m->last_epoch) >= target) return PYSHM_STATE_OK;
        int s = AL(&m->st.state);
        if (s == PYSHM_MIRROR_FAILED) return AL(&m->st.last_error);
        if (!m->thread_started || s == PYSHM_MIRROR_STOPPED || s == PYSHM_MIRROR_PAUSED) {
            /* nobody else will run a round: run them here */
            if (m->thread_started && s != PYSHM_MIRROR_STOPPED) return PYSHM_MIRROR_E_STATE;
            int rc = round_once(m);
            if (rc < 0) return rc;
            if (rc == 1) sleep_ns(20000);
            if (rc != 1 && AL(&m->last_epoch) >= target) return PYSHM_STATE_OK;
        } else {
            sleep_ns(20000);
        }
        if (mono_ns() > deadline) return PYSHM_MIRROR_E_TIMEOUT;
    }
}

int pyshm_mirror_round(pyshm_mirror_t *m)
{
    if (m->thread_started && AL(&m->st.state) != PYSHM_MIRROR_STOPPED)
        return PYSHM_MIRROR_E_STATE;
    int rc = round_once(m);
    return rc < 0 ? rc : rc;
}

int pyshm_mirror_stop(pyshm_mirror_t *m, uint64_t timeout_ns)
{
    if (!m->thread_started) {
        AS(&m->st.state, PYSHM_MIRROR_STOPPED);
        return PYSHM_STATE_OK;
    }
    __atomic_store_n(&m->cmd, CMD_STOP, __ATOMIC_RELEASE);
    uint64_t deadline = mono_ns() + timeout_ns;
    while (AL(&m->st.state) != PYSHM_MIRROR_STOPPED && AL(&m->st.state) != PYSHM_MIRROR_FAILED) {
        if (mono_ns() > deadline) return PYSHM_MIRROR_E_TIMEOUT;
        sleep_ns(20000);
    }
    pthread_join(m->thread, NULL);
    m->thread_started = 0;
    return PYSHM_STATE_OK;
}

void pyshm_mirror_stats(pyshm_mirror_t *m, pyshm_mirror_stats_t *out)
{
    out->state = AL(&m->st.state);
    out->last_error = AL(&m->st.last_error);
    out->rounds = AL(&m->st.rounds);
    out->full_resyncs = AL(&m->st.full_resyncs);
    out->rows_copied = AL(&m->st.rows_copied);
    out->bytes_copied = AL(&m->st.bytes_copied);
    out->chunks_scanned = AL(&m->st.chunks_scanned);
    out->busy_retries = AL(&m->st.busy_retries);
    out->consistent_seq = AL(&m->st.consistent_seq);
    out->last_epoch = AL(&m->st.last_epoch);
    out->last_round_ns = AL(&m->st.last_round_ns);
    out->max_round_ns = AL(&m->st.max_round_ns);
    out->lag_ns = AL(&m->st.lag_ns);
    out->elapsed_ns = AL(&m->st.elapsed_ns);
    out->busy_ns = AL(&m->st.busy_ns);
}

int pyshm_mirror_destroy(pyshm_mirror_t *m)
{
    if (!m) return PYSHM_STATE_OK;
    if (m->thread_started) return PYSHM_MIRROR_E_STATE;
    free(m->row);
    free(m);
    return PYSHM_STATE_OK;
}
