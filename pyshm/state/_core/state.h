/*
 * pyshm state region core: per-row seqlocks, the region epoch, copy-on-write cuts.
 *
 * One pyshm_state_t per mapping and role. It holds pointers into the mapping and private
 * copies of the validated sizing fields, so nothing read from shared memory sizes an
 * access on the hot path. Every wait spins for at most spin_ns and then returns a code
 * (never blocks for ever): the Python layer decides whether the other party is dead.
 *
 * Return codes: >= 0 success (a count where stated), negative PYSHM_STATE_E_*.
 */
#ifndef PYSHM_STATE_H
#define PYSHM_STATE_H

#include <stdint.h>

#define PYSHM_STATE_OK 0
#define PYSHM_STATE_E_PARAM (-1)   /* bad argument: row index out of range, ... */
#define PYSHM_STATE_E_CORRUPT (-2) /* header sizing fields disagree with the mapping */
#define PYSHM_STATE_E_BUSY (-3)    /* a row stayed odd (being written) for spin_ns */
#define PYSHM_STATE_E_TX (-6)      /* transaction state: epoch odd at begin (a dead
                                    * writer's transaction), or a cut found the writer
                                    * inside one for spin_ns */
#define PYSHM_STATE_E_RETRY (-7)   /* consistent read: the epoch kept moving for spin_ns */
#define PYSHM_STATE_E_CUT (-8)     /* another process runs a cut (its pid in
                                    * last_error_value) */

/* words of the header the control plane (Python) reads, writes and swaps */
enum {
    PYSHM_SW_EPOCH = 0, PYSHM_SW_APPLIED,
    PYSHM_SW_W_PID, PYSHM_SW_W_SLOT, PYSHM_SW_W_RING_ID, PYSHM_SW_W_HEARTBEAT,
    PYSHM_SW_C_PID, PYSHM_SW_C_GEN, PYSHM_SW_C_ACTIVE, PYSHM_SW_C_SEQ, PYSHM_SW_C_EPOCH,
    PYSHM_SW_C_STARTED,
    PYSHM_SW_H_STATE, PYSHM_SW_H_NEW_PID, PYSHM_SW_H_OLD_PID, PYSHM_SW_H_CLAIM,
    PYSHM_SW_H_FINAL, PYSHM_SW_H_NS,
    PYSHM_SW_I_REGION, PYSHM_SW_I_SOURCE, PYSHM_SW_I_SOURCE_SEQ,
    PYSHM_SW_I_RETAIN_SEQ, PYSHM_SW_I_RETAIN_POS, PYSHM_SW_I_RETAIN_RING,
    PYSHM_SW_COUNT
};

typedef struct {
    void *hdr;                 /* pyshm_state_header_t * */
    uint64_t *versions;
    void *chunks;              /* pyshm_state_chunk_t * */
    uint8_t *rows;
    uint8_t *shadow_rows;
    uint64_t *shadow_versions;
    uint64_t row_count, itemsize, chunk_rows, chunk_count;
    uint64_t spin_ns;          /* how long one wait may spin before returning */
    /* writer */
    uint64_t epoch;            /* the odd epoch of the open transaction */
    int32_t in_tx;
    int32_t last_error;
    int64_t last_error_row;    /* the row (or chunk) an error is about */
    uint64_t last_error_value; /* e.g. the pid of a cut holder, an epoch */
    uint64_t writes, commits;
    uint64_t cow_chunks;       /* chunks this writer saved into the shadow area */
    uint64_t cow_ns;           /* time spent saving them */
    uint64_t chunks_taken;     /* of those, chunks a cut was copying at that moment */
    uint64_t cuts_fixed;       /* cuts this writer finished fixing (owner descheduled) */
    uint64_t max_stall_ns;     /* longest single save, wall time (the writer never waits) */
    uint64_t cow_cpu_ns;       /* the saves' CPU time (wall time minus preemption) */
    uint64_t max_stall_cpu_ns; /* longest single save, CPU time */
    /* cut (snapshot or mirror round) */
    uint64_t cut_gen;
    uint64_t cut_seq;
    uint64_t cut_epoch;
    uint64_t hold_ns;          /* how long fixing the cut took (the cut bit was set) */
    uint64_t copied_live, copied_shadow; /* chunks of the last cut, by source */
} pyshm_state_t;

/* offsets exported for tests/test_state_layout.py (UINT64_MAX past the table) */
uint64_t pyshm_state_layout_offset(int which);

/* out7 = {versions, chunks, rows, shadow_rows, shadow_versions, segment size, chunk count} */
int pyshm_state_geometry(uint64_t row_count, uint32_t itemsize, uint32_t desc_length,
                         uint32_t chunk_rows, uint64_t *out7);

/* Attach to a mapping whose static header Python has validated; the sizing fields are
 * passed again and compared with the header and the mapped size. */
int pyshm_state_open(pyshm_state_t *s, void *base, uint64_t mapped, uint64_t row_count,
                     uint32_t itemsize, uint32_t desc_length, uint32_t chunk_rows);

uint64_t pyshm_state_load(const pyshm_state_t *s, int word);         /* acquire */
void pyshm_state_store(pyshm_state_t *s, int word, uint64_t value);  /* release */
/* compare-and-swap; returns 1 if swapped, else 0 with *expected set to the value seen */
int pyshm_state_cas(pyshm_state_t *s, int word, uint64_t *expected, uint64_t desired);

/* writer: a transaction groups the row writes of one record (or batch) */
int pyshm_state_begin(pyshm_state_t *s);
int pyshm_state_commit(pyshm_state_t *s, uint64_t seq, int set_seq);
int pyshm_state_write(pyshm_state_t *s, uint64_t row, const uint8_t *src, int autocommit);
int64_t pyshm_state_write_many(pyshm_state_t *s, const uint64_t *rows, const uint8_t *src,
                               uint64_t n, int autocommit);
int64_t pyshm_state_write_range(pyshm_state_t *s, uint64_t start, const uint8_t *src,
                                uint64_t n, int autocommit);
/* make every row equal to src's (row_count x itemsize bytes) inside the open
 * transaction (one is opened if needed), writing only the rows that differ; returns
 * how many were written (a handover's sync of the live region to the new state) */
int64_t pyshm_state_sync_rows(pyshm_state_t *s, const uint8_t *src);
/* a writer taking over from a dead one: close the transaction it left open (the epoch
 * goes back to even, rows half-written by it become even again); returns how many rows
 * were odd. The caller restores the region right after. */
int64_t pyshm_state_reset_dead_writer(pyshm_state_t *s);

/* the mirror's primitives (state_mirror.c): copy-on-write bookkeeping for a row about
 * to be written inside the open transaction, and a row write that sets the version to
 * `version` (even) instead of counting up */
int pyshm_state_prepare_row(pyshm_state_t *s, uint64_t row);
void pyshm_state_put_row_version(pyshm_state_t *s, uint64_t row, const uint8_t *src,
                                 uint64_t version);

/* readers */
int pyshm_state_read(pyshm_state_t *s, uint64_t row, uint8_t *dst);
int64_t pyshm_state_read_many(pyshm_state_t *s, const uint64_t *rows, uint8_t *dst,
                              uint64_t n);
/* all rows (and versions, if not NULL) at one epoch, optimistically: E_RETRY if the
 * writer kept the epoch moving for spin_ns */
int pyshm_state_read_all(pyshm_state_t *s, uint8_t *dst, uint64_t *versions,
                         uint64_t *seq_out, uint64_t *epoch_out);

/* cuts: begin fixes the cut at a commit boundary (a few stores while the epoch's cut bit
 * is set; a writer finds the bit, finishes them itself and goes on), copy walks the
 * chunks (the writer saves a chunk's pre-image before its first write into it, even
 * from under the copy, so the writer never waits for a cut), end closes it. */
int pyshm_state_cut_begin(pyshm_state_t *s, int64_t pid);
int64_t pyshm_state_cut_copy(pyshm_state_t *s, uint8_t *dst_rows, uint64_t *dst_versions);
int pyshm_state_cut_end(pyshm_state_t *s, int64_t pid);
/* a cut whose process died: stop it (writers no longer wait for it); 1 if it was */
int pyshm_state_cut_abandon(pyshm_state_t *s, int64_t dead_pid);

#endif /* PYSHM_STATE_H */
