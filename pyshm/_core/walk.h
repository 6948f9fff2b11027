/* pyshm_walk_chains (walk.c): several quiescent walks (ring.h, pyshm_walk) interleaved. */
#ifndef PYSHM_WALK_H
#define PYSHM_WALK_H

#include <stdint.h>

#include "ring.h"

/* w[i].pos is where chain i starts (a record boundary) and ends[i] where it stops; each
 * w[i] accumulates as pyshm_walk's does. Returns PYSHM_OK, or PYSHM_E_CORRUPT when a
 * chain failed (its w[i].error / error_pos say where; the other chains still ran). */
int pyshm_walk_chains(pyshm_walk_t *w, const uint64_t *ends, int32_t count,
                      const uint8_t *buf, uint64_t buf_len, uint64_t base, uint64_t mask,
                      uint64_t psize, uint32_t max_record);

#endif /* PYSHM_WALK_H */
