/*
 * pyshm_walk_chains: the quiescent walk (ring.c, pyshm_walk) over several sub-windows at
 * once, one record of each in turn.
 *
 * A walk is a chain of dependent loads (a record's length gives the next record's
 * position), so one walk over memory that is not in the cache waits a full memory
 * latency per record. Every partition start is a record boundary, so the window can be
 * cut there into independent chains; stepping them round-robin keeps several header
 * loads in flight (measured several times faster on the image of a 256 MiB ring), and
 * each chain's next header is prefetched as soon as its position is known.
 *
 * A record that passes every check is accepted inline (the checks of pyshm_walk,
 * written out once more: about 30 instructions a record where a pyshm_walk call per
 * record cost 136, callgrind); anything else, a bad parameter included, is handed to
 * pyshm_walk itself for that one record, so errors and their positions are exactly
 * its own.
 */
#include <string.h>

#include "layout.h"
#include "walk.h"

/* one record of chain w, accepted only if pyshm_walk would accept it; 1 if accepted */
static inline int fast_step(pyshm_walk_t *w, uint64_t end, const uint8_t *buf,
                            uint64_t buf_len, uint64_t base, uint64_t mask, uint64_t psize,
                            uint32_t max_record)
{
    uint64_t pos = w->pos;
    uint64_t off = (pos - base) & mask;
    uint64_t room = psize - (pos & (psize - 1));
    uint64_t left = end - pos;
    if (left < PYSHM_PADDING_MIN || off > buf_len || buf_len - off < PYSHM_PADDING_MIN)
        return 0;
    const uint8_t *q = buf + off;
    int32_t len, type;
    memcpy(&len, q, 4);
    memcpy(&type, q + 4, 4);
    if (type == PYSHM_PADDING_TYPE) {
        if ((uint64_t)(int64_t)len != room || room > left || buf_len - off < room) return 0;
        w->padding_bytes += room;
        w->pos = pos + room;
        return 1;
    }
    if (len < (int32_t)PYSHM_RECORD_HEADER || (uint32_t)len > max_record) return 0;
    uint64_t a = pyshm_align8((uint64_t)(uint32_t)len);
    if (a > room || a > left || buf_len - off < a) return 0;
    uint64_t seq;
    memcpy(&seq, q + 8, 8);
    if (w->count == 0)
        w->first_seq = seq;
    else if (seq != w->last_seq + 1)
        return 0;
    w->last_seq = seq;
    w->count++;
    w->payload_bytes += (uint64_t)len - PYSHM_RECORD_HEADER;
    w->pos = pos + a;
    return 1;
}

int pyshm_walk_chains(pyshm_walk_t *w, const uint64_t *ends, int32_t count,
                      const uint8_t *buf, uint64_t buf_len, uint64_t base, uint64_t mask,
                      uint64_t psize, uint32_t max_record)
{
    int rc = PYSHM_OK;
    /* the arguments, checked once per chain by pyshm_walk itself (zero records) */
    for (int32_t i = 0; i < count; i++) {
        if (w[i].error || w[i].pos >= ends[i]) continue;
        if (pyshm_walk(&w[i], buf, buf_len, base, mask, ends[i], w[i].pos, psize,
                       max_record) != PYSHM_OK)
            rc = PYSHM_E_CORRUPT;
    }
    int32_t active = count;
    while (active > 0) {
        active = 0;
        for (int32_t i = 0; i < count; i++) {
            if (w[i].error || w[i].pos >= ends[i]) continue;
            if (!fast_step(&w[i], ends[i], buf, buf_len, base, mask, psize, max_record) &&
                pyshm_walk(&w[i], buf, buf_len, base, mask, ends[i], w[i].pos + 1, psize,
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
