/*
 * pyshm state region layout, version 1: the C mirror of pyshm/state/layout.py.
 *
 * Every header offset is pinned with _Static_assert, and tests/test_state_layout.py
 * checks the same numbers from Python (pyshm_state_layout_offset), so C and Python
 * cannot drift apart.
 *
 *   0x000 +----------------------------------------------------------------------+
 *         | magic "PYSHMSTA" | version | flags | row_count | itemsize | desc_len |
 *         | chunk_rows | desc_crc | created_ns | creator_pid | name[56]          |
 *         | reserved[12] | header_crc (CRC32C of 0x000..0x07B)                   |
 *   0x080 | epoch        writer CAS even->odd, release even; bit 63: cut fixing  |
 *   0x100 | applied_seq  writer, release store before the epoch goes even        |
 *   0x180 | writer       {pid, ring slot, ring id, heartbeat_ns}                 |
 *   0x200 | cut          {pid, gen, active, seq, epoch, started_ns}              |
 *   0x280 | handover     {state, new_pid, old_pid, claim_pid, final_seq, ns}     |
 *   0x300 | identity     {region_id, source_id, source_seq, retain seq/pos/ring} |
 *   0x1000+----------------------------------------------------------------------+
 *         | dtype description (canonical JSON), desc_length bytes                |
 *         | versions[row_count] u64        per-row seqlock                       |
 *         | chunks[chunk_count] {cow, dirty_epoch}  copy-on-write state          |
 *         | rows[row_count * itemsize]                                           |
 *         | shadow_rows[row_count * itemsize]  pre-images saved during a cut     |
 *         | shadow_versions[row_count] u64                                       |
 *         +----------------------------------------------------------------------+
 * Each area after the header starts on a 4 KiB boundary; their offsets are derived
 * from row_count, itemsize, desc_length and chunk_rows (pyshm_state_geometry).
 */
#ifndef PYSHM_STATE_LAYOUT_H
#define PYSHM_STATE_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#include "layout.h" /* the ring's pyshm_counter_t and the ordered-access macros */

#define PYSHM_STATE_MAGIC "PYSHMSTA"
#define PYSHM_STATE_VERSION 1u
#define PYSHM_STATE_HEADER_SIZE 0x1000u
#define PYSHM_STATE_PAGE 4096u
#define PYSHM_STATE_FLAG_REPLICA 0x1u
#define PYSHM_STATE_EPOCH_CUT ((uint64_t)1 << 63)
#define PYSHM_STATE_NO_SEQ UINT64_MAX
#define PYSHM_STATE_MAX_ROWS ((uint64_t)1 << 40)
#define PYSHM_STATE_MAX_ITEMSIZE (1u << 20)
#define PYSHM_STATE_MAX_DESC (64u << 10)

/* chunk copy-on-write states: low two bits of chunks[c].cow, the cut generation above */
#define PYSHM_CHUNK_COPYING 1u /* the snapshot is copying the live rows */
#define PYSHM_CHUNK_COPIED 2u  /* the snapshot has the live rows */
#define PYSHM_CHUNK_SAVED 3u   /* the writer saved the pre-image into the shadow area */

/* a replica's versions are the source's, with this bit flipped at each full resync */
#define PYSHM_STATE_PARITY ((uint64_t)1 << 62)

typedef struct {
    int64_t pid;
    int64_t slot;          /* ring consumer slot the writer reads with (-1: none) */
    uint64_t ring_id;      /* created_ns of that ring: which ring the slot belongs to */
    int64_t heartbeat_ns;
    uint8_t pad_[PYSHM_SPAN - 32];
} pyshm_state_writer_t;

typedef struct {
    int64_t pid;           /* the process running the cut (snapshot or mirror round) */
    uint64_t gen;          /* generation of the cut being (or last) fixed, published
                            * before the epoch's cut bit is set */
    uint64_t active;       /* generation of the cut in progress, 0 when none */
    uint64_t seq;          /* applied_seq at the cut */
    uint64_t epoch;        /* epoch at the cut */
    int64_t started_ns;
    uint8_t pad_[PYSHM_SPAN - 48];
} pyshm_state_cut_t;

typedef struct {
    uint64_t state;        /* HO_* of pyshm/state/layout.py */
    int64_t new_pid;
    int64_t old_pid;
    int64_t claim_pid;     /* the process running a handover (CAS): one at a time */
    uint64_t final_seq;
    int64_t ns;
    uint8_t pad_[PYSHM_SPAN - 48];
} pyshm_state_handover_t;

typedef struct {
    uint64_t region_id;    /* random, nonzero; new at every create and restore */
    uint64_t source_id;    /* replica: region_id of the region it mirrors */
    uint64_t source_seq;   /* replica: applied_seq of the source at the last round */
    uint64_t retain_seq;   /* the ring holds records from this sequence on for recovery */
    uint64_t retain_pos;   /* ... starting at this ring position (a record boundary) */
    uint64_t retain_ring;  /* ... of the ring created at this time (its created_ns) */
    uint8_t pad_[PYSHM_SPAN - 48];
} pyshm_state_identity_t;

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t flags;
    uint64_t row_count;
    uint32_t itemsize;
    uint32_t desc_length;
    uint32_t chunk_rows;
    uint32_t desc_crc;
    uint64_t created_ns;
    uint64_t creator_pid;
    char name[56];
    uint8_t reserved_[12];
    uint32_t header_crc;
    pyshm_counter_t epoch;
    pyshm_counter_t applied_seq;
    pyshm_state_writer_t writer;
    pyshm_state_cut_t cut;
    pyshm_state_handover_t handover;
    pyshm_state_identity_t identity;
    uint8_t reserved2_[PYSHM_STATE_HEADER_SIZE - 0x380];
} pyshm_state_header_t;

typedef struct {
    uint64_t cow;          /* gen << 2 | PYSHM_CHUNK_* for the cut in progress */
    uint64_t dirty_epoch;  /* epoch of the last write into the chunk */
} pyshm_state_chunk_t;

_Static_assert(offsetof(pyshm_state_header_t, version) == 0x008, "version");
_Static_assert(offsetof(pyshm_state_header_t, flags) == 0x00C, "flags");
_Static_assert(offsetof(pyshm_state_header_t, row_count) == 0x010, "row_count");
_Static_assert(offsetof(pyshm_state_header_t, itemsize) == 0x018, "itemsize");
_Static_assert(offsetof(pyshm_state_header_t, desc_length) == 0x01C, "desc_length");
_Static_assert(offsetof(pyshm_state_header_t, chunk_rows) == 0x020, "chunk_rows");
_Static_assert(offsetof(pyshm_state_header_t, desc_crc) == 0x024, "desc_crc");
_Static_assert(offsetof(pyshm_state_header_t, created_ns) == 0x028, "created_ns");
_Static_assert(offsetof(pyshm_state_header_t, creator_pid) == 0x030, "creator_pid");
_Static_assert(offsetof(pyshm_state_header_t, name) == 0x038, "name");
_Static_assert(offsetof(pyshm_state_header_t, header_crc) == 0x07C, "header_crc");
_Static_assert(offsetof(pyshm_state_header_t, epoch) == 0x080, "epoch");
_Static_assert(offsetof(pyshm_state_header_t, applied_seq) == 0x100, "applied_seq");
_Static_assert(offsetof(pyshm_state_header_t, writer) == 0x180, "writer");
_Static_assert(offsetof(pyshm_state_header_t, cut) == 0x200, "cut");
_Static_assert(offsetof(pyshm_state_header_t, handover) == 0x280, "handover");
_Static_assert(offsetof(pyshm_state_header_t, identity) == 0x300, "identity");
_Static_assert(sizeof(pyshm_state_writer_t) == PYSHM_SPAN, "writer span");
_Static_assert(sizeof(pyshm_state_cut_t) == PYSHM_SPAN, "cut span");
_Static_assert(sizeof(pyshm_state_handover_t) == PYSHM_SPAN, "handover span");
_Static_assert(sizeof(pyshm_state_identity_t) == PYSHM_SPAN, "identity span");
_Static_assert(sizeof(pyshm_state_header_t) == PYSHM_STATE_HEADER_SIZE, "header size");
_Static_assert(sizeof(pyshm_state_chunk_t) == 16, "chunk entry");

static inline uint64_t pyshm_state_round_page(uint64_t n)
{
    return (n + PYSHM_STATE_PAGE - 1) & ~(uint64_t)(PYSHM_STATE_PAGE - 1);
}

#endif /* PYSHM_STATE_LAYOUT_H */
