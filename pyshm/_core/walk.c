/*
 * pyshm_walk_chains: the quiescent walk (ring.c, pyshm_walk) over several sub-windows at
 * once, one record of each in turn.
 *
 * A walk is a chain of dependent loads (a record's length gives the next record's
 * position), so one walk over memory that is not in the cache waits a full memory
 * latency per record. Every partition start is a record boundary, so the window can be
 * cut there into independent chains; stepping them round-robin keeps several header
 * loads in flight (measured several times faster on the image of a 256 MiB ring). Each
 * step is pyshm_walk itself, stopped after one record, so the checks are exactly its.
 */
#include "walk.h"

int pyshm_walk_chains(pyshm_walk_t *w, const uint64_t *ends, int32_t count,
                      const uint8_t *buf, uint64_t buf_len, uint64_t base, uint64_t mask,
                      uint64_t psize, uint32_t max_record)
{
    int rc = PYSHM_OK;
    int32_t active = count;
    while (active > 0) {
        active = 0;
        for (int32_t i = 0; i < count; i++) {
            if (w[i].error || w[i].pos >= ends[i]) continue;
            if (pyshm_walk(&w[i], buf, buf_len, base, mask, ends[i], w[i].pos + 1, psize,
                           max_record) != PYSHM_OK) {
                rc = PYSHM_E_CORRUPT;
                continue;
            }
            if (w[i].pos < ends[i]) {
                /* this chain's next header, fetched while the other chains step: its
                 * address is known now, its load comes a round later */
                __builtin_prefetch((const void *)(uintptr_t)((uintptr_t)buf +
                                                             ((w[i].pos - base) & mask)));
                active++;
            }
        }
    }
    return rc;
}
