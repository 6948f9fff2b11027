/*
 * CPU mirror of a state region into a replica region (same layout, replica flag set).
 *
 * A poll thread waits for the source's epoch to move, then runs one round: it fixes a
 * cut of the source (the copy-on-write protocol of state.c, so the source writer waits
 * at most one chunk), and for every chunk written since the previous round
 * (chunks[c].dirty_epoch) it copies the rows whose version differs from the replica's,
 * with their versions, inside one replica transaction committed at the cut's sequence.
 * The replica's applied_seq therefore always names a sequence at which every replica
 * row is exactly the source's. A replica whose source_id differs from the source's
 * region_id (a new or restored source) is resynchronised in full: every row rewritten,
 * versions carrying a flipped PYSHM_STATE_PARITY bit so that no reader can mistake an
 * old copy for a new one.
 */
#ifndef PYSHM_STATE_MIRROR_H
#define PYSHM_STATE_MIRROR_H

#include <stdint.h>

#include "state.h"

#define PYSHM_MIRROR_CREATED 0
#define PYSHM_MIRROR_RUNNING 1
#define PYSHM_MIRROR_PAUSED 2
#define PYSHM_MIRROR_STOPPED 3
#define PYSHM_MIRROR_FAILED 4

#define PYSHM_MIRROR_E_STATE (-20)    /* call not valid in the current state */
#define PYSHM_MIRROR_E_TIMEOUT (-21)  /* a wait ran out of time */
#define PYSHM_MIRROR_E_THREAD (-22)   /* pthread_create failed */
#define PYSHM_MIRROR_E_MISMATCH (-23) /* source and replica differ in rows / row size */
#define PYSHM_MIRROR_E_NOMEM (-24)

typedef struct {
    int32_t state;
    int32_t last_error;
    uint64_t rounds;          /* rounds that copied (or checked) something */
    uint64_t full_resyncs;
    uint64_t rows_copied;
    uint64_t bytes_copied;
    uint64_t chunks_scanned;  /* chunks whose versions were compared */
    uint64_t busy_retries;    /* rounds postponed: a snapshot held the cut, or the
                               * writer stayed inside a transaction */
    uint64_t consistent_seq;  /* the replica's applied_seq after the last round */
    uint64_t last_epoch;      /* source epoch of the last round */
    uint64_t last_round_ns;
    uint64_t max_round_ns;
    uint64_t lag_ns;          /* age of the oldest source commit not yet mirrored */
    uint64_t elapsed_ns;
    uint64_t busy_ns;         /* time spent in rounds */
} pyshm_mirror_stats_t;

typedef struct pyshm_mirror pyshm_mirror_t;

/* src and rep: pyshm_state_t opened on each mapping (kept by the caller, which must
 * keep both mappings alive until destroy). pid: owner of the source cuts. */
int pyshm_mirror_create(pyshm_state_t *src, pyshm_state_t *rep, int64_t pid,
                        uint64_t max_sleep_ns, pyshm_mirror_t **out);
int pyshm_mirror_start(pyshm_mirror_t *m);
int pyshm_mirror_pause(pyshm_mirror_t *m, uint64_t timeout_ns);
int pyshm_mirror_resume(pyshm_mirror_t *m, uint64_t timeout_ns);
/* wait until a round has mirrored everything committed at the time of the call */
int pyshm_mirror_sync(pyshm_mirror_t *m, uint64_t timeout_ns);
int pyshm_mirror_stop(pyshm_mirror_t *m, uint64_t timeout_ns);
/* one round in the caller's thread (the mirror must not be running) */
int pyshm_mirror_round(pyshm_mirror_t *m);
void pyshm_mirror_stats(pyshm_mirror_t *m, pyshm_mirror_stats_t *out);
int pyshm_mirror_destroy(pyshm_mirror_t *m);

#endif /* PYSHM_STATE_MIRROR_H */
