/*
 * The CPU engine's copy mode (engine.h, pyshm_copy_chunks): checksummed chunks of a source
 * buffer (an image's data, mapped from the page cache) are verified, or copied into a
 * ring's data area and verified on the way, by several threads.
 *
 * Each chunk is cut into pieces of at most PIECE bytes; threads take pieces from a shared
 * counter, so a few large chunks keep every thread busy too. A piece's CRC starts from
 * zero and the chunk's CRC is put together afterwards, in order, with
 * pyshm_crc32c_combine, then compared with the expected one. A copy is the fused
 * copy+CRC loop (the CRC is of the very bytes stored), with streaming stores for large
 * pieces, fenced by the thread that issued them before it reports.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdlib.h>

#include "crc32c.h"
#include "engine.h"

#define PIECE (4ull << 20)
#define NT_PIECE (1ull << 20)

typedef struct {
    uint64_t chunk;
    uint64_t src_off;
    uint64_t position;
    uint64_t len;
    uint32_t crc; /* result */
} piece_t;

typedef struct {
    const uint8_t *src;
    uint8_t *dst;
    uint64_t mask;
    piece_t *pieces;
    uint64_t npieces;
    uint64_t next; /* atomic: next piece to take */
} job_t;

static void do_piece(job_t *j, piece_t *p) {
    const uint8_t *s = j->src + p->src_off;
    uint32_t crc = 0;
    if (!j->dst) {
        p->crc = pyshm_crc32c(0, s, p->len);
        return;
    }
    int nt = p->len >= NT_PIECE;
    uint64_t pos = p->position, left = p->len;
    while (left) {
        uint64_t off = pos & j->mask;
        uint64_t n = j->mask + 1 - off;
        if (n > left) n = left; /* split at the ring's wrap */
        crc = pyshm_crc32c_copy(crc, j->dst + off, s, n, nt);
        s += n;
        pos += n;
        left -= n;
    }
    if (nt) pyshm_crc32c_store_fence();
    p->crc = crc;
}

static void *run(void *arg) {
    job_t *j = arg;
    for (;;) {
        uint64_t i = __atomic_fetch_add(&j->next, 1, __ATOMIC_RELAXED);
        if (i >= j->npieces) break;
        do_piece(j, &j->pieces[i]);
    }
    return NULL;
}

int pyshm_copy_chunks(const uint8_t *src, uint64_t src_len, uint8_t *dst, uint64_t capacity,
                      const pyshm_copy_chunk_t *chunks, uint64_t count, int threads,
                      uint64_t *bad_chunk) {
    *bad_chunk = 0;
    if (!src || !chunks || threads < 1 || threads > PYSHM_ENGINE_MAX_THREADS + 1)
        return PYSHM_EINVAL;
    if (dst && (capacity < 8 || (capacity & (capacity - 1)))) return PYSHM_EINVAL;
    uint64_t npieces = 0;
    for (uint64_t i = 0; i < count; i++) {
        const pyshm_copy_chunk_t *c = &chunks[i];
        if (c->src_off > src_len || c->len > src_len - c->src_off) return PYSHM_EINVAL;
        if (dst && c->len > capacity) return PYSHM_EINVAL;
        npieces += c->len ? (c->len + PIECE - 1) / PIECE : 1;
    }
    piece_t *pieces = calloc(npieces ? npieces : 1, sizeof(*pieces));
    if (!pieces) return PYSHM_ENOMEM;
    uint64_t k = 0;
    for (uint64_t i = 0; i < count; i++) {
        const pyshm_copy_chunk_t *c = &chunks[i];
        uint64_t done = 0;
        do {
            uint64_t n = c->len - done < PIECE ? c->len - done : PIECE;
            pieces[k++] = (piece_t){i, c->src_off + done, c->position + done, n, 0};
            done += n;
        } while (done < c->len);
    }
    job_t job = {src, dst, capacity - 1, pieces, npieces, 0};
    pthread_t tids[PYSHM_ENGINE_MAX_THREADS];
    int started = 0;
    if ((uint64_t)threads > npieces) threads = npieces ? (int)npieces : 1;
    for (int t = 1; t < threads; t++) {
        if (pthread_create(&tids[started], NULL, run, &job) != 0) break; /* fewer helpers */
        started++;
    }
    run(&job);
    for (int t = 0; t < started; t++) pthread_join(tids[t], NULL);
    int rc = PYSHM_EOK;
    k = 0;
    for (uint64_t i = 0; i < count; i++) {
        uint32_t crc = 0;
        for (; k < npieces && pieces[k].chunk == i; k++)
            crc = pyshm_crc32c_combine(crc, pieces[k].crc, pieces[k].len);
        if (crc != chunks[i].crc) {
            *bad_chunk = i;
            rc = PYSHM_ECHECKSUM;
            break;
        }
    }
    free(pieces);
    return rc;
}
