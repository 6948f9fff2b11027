/*
 * pyshm ring: single producer, many consumers, over the layout of layout.h.
 *
 * The Python wrapper (pyshm/ring.py) owns one pyshm_producer_t / pyshm_consumer_t per
 * object; they hold pointers into the mapping plus private copies of the validated
 * static header, so no length read from shared memory is trusted on the hot path.
 *
 * Return codes: >= 0 success (a sequence number, a count or a length), negative errors.
 */
#ifndef PYSHM_RING_H
#define PYSHM_RING_H

#include <stdint.h>

#define PYSHM_OK 0
#define PYSHM_FULL (-1)          /* lossless ring has no room: not an error */
#define PYSHM_E_TOO_LARGE (-2)   /* record longer than max_record */
#define PYSHM_E_CORRUPT (-3)     /* a length/position read from shared memory is invalid */
#define PYSHM_E_PARAM (-4)       /* bad argument (capacity, partitions, ...) */
#define PYSHM_E_STATE (-5)       /* commit without claim, double claim, ... */
#define PYSHM_E_BUSY (-6)        /* another live producer / no free consumer slot */
#define PYSHM_E_AHEAD (-7)       /* tail moved backwards under a consumer (ring reset) */

/* Positions (tail, tail intent, consumer positions) must stay below this: a sum such as
 * `pos + capacity` (capacity <= 2^46) then never wraps a uint64_t. 2^62 bytes is 4.6e18:
 * 1.5 years of nonstop writing at 100 GB/s, 15 years at 10 GB/s (a ring is recreated
 * long before). A counter at or above it is reported as corruption (PYSHM_E_CORRUPT),
 * never used; a producer refuses to publish past it. */
#define PYSHM_POS_LIMIT ((uint64_t)1 << 62)

/* last_error_field: which value a PYSHM_E_CORRUPT / PYSHM_E_AHEAD is about */
#define PYSHM_FIELD_NONE 0
#define PYSHM_FIELD_TAIL 1           /* header tail: misaligned or >= PYSHM_POS_LIMIT */
#define PYSHM_FIELD_INTENT 2         /* header tail_intent: >= limit or > tail + capacity */
#define PYSHM_FIELD_RECORD 3         /* record length/type at last_error_pos */
#define PYSHM_FIELD_POSITION 4       /* the consumer's own position (beyond tail) */
#define PYSHM_FIELD_SEQUENCE 5       /* record sequence lower than the one expected */
#define PYSHM_FIELD_NEXT_SEQ 6       /* records below tail disagree with each other */

#define PYSHM_WAIT_SPIN 0
#define PYSHM_WAIT_YIELD 1
#define PYSHM_WAIT_SLEEP 2
#define PYSHM_WAIT_BLOCK 3       /* futex sleep, woken by the producer (docs/ring.md) */

typedef struct {
    void *hdr;               /* pyshm_header_t * */
    uint8_t *data;
    uint64_t capacity, mask, psize;
    uint32_t max_record;
    uint32_t gate_flags;     /* header flags (lossless / gate on mirror) as last seen */
    uint64_t tail;           /* private copy of the published tail */
    uint64_t intent;         /* highest tail intent ever stored (never goes back) */
    uint64_t sequence;       /* next sequence number */
    uint64_t gate_limit;     /* cached: may write up to this position without rescanning */
    uint64_t claim_pos;      /* position of the claimed record, valid if claim_len */
    uint32_t claim_len;
    int64_t last_error_pos;  /* position a PYSHM_E_CORRUPT refers to */
    int32_t last_error_field; /* PYSHM_FIELD_*: which value was invalid */
    uint32_t probe_countdown; /* publishes until the next end-to-end lag probe is offered */
    uint32_t probe_rng;      /* xorshift32 state: random intervals, so probes do not beat
                              * with a periodic producer or engine */
    uint32_t wake_mode;      /* 0 until the header's FLAG_WAKE is seen, then the
                              * PYSHM_WAKE_* this producer acknowledged in wake_ack */
    uint32_t wake_idle;      /* wakes in a row that found nobody in the futex */
    uint64_t wakes;          /* FUTEX_WAKE calls made (statistics, tests) */
} pyshm_producer_t;

/* mean number of publishes between two lag probes the producer offers (the engine must
 * also have consumed the previous one) */
#define PYSHM_PROBE_EVERY 64u

typedef struct {
    void *hdr;
    uint8_t *data;
    uint64_t capacity, mask, psize;
    uint32_t max_record;
    int32_t slot;            /* consumer slot index, -1 when not registered */
    uint64_t pos;            /* next position to read */
    uint64_t expect;         /* next expected sequence number */
    int32_t have_expect;     /* 0 until the first record fixes the sequence baseline */
    uint64_t skip_below;     /* records with a smaller sequence are skipped (start=seq) */
    uint64_t lost;           /* sequences in [start_seq, expect) never returned */
    uint64_t start_seq;      /* first sequence this consumer accounts for (valid once
                              * have_expect: the first record it met, or the sequence
                              * asked for in a seek by sequence) */
    uint64_t laps;           /* times this consumer was lapped */
    uint32_t reads;
    /* the last record returned */
    uint64_t msg_pos;
    uint64_t msg_seq;
    int32_t msg_type;
    uint32_t msg_len;        /* payload bytes */
    uint64_t msg_off;        /* offset of the payload in data[] */
    int64_t last_error_pos;
    int32_t last_error_field; /* PYSHM_FIELD_*: which value was invalid */
    uint32_t need_len;       /* payload length of a record that did not fit the buffer
                              * given to pyshm_read_into (it returned 2) */
    uint64_t sleeps;         /* FUTEX_WAITs entered by `block` waits (statistics, tests) */
    /* the last record again, as four 8-byte words {payload length, type, sequence,
     * position}: Python reads them through a memoryview of this struct, which costs a
     * third of a cffi field access per value (the hot read path reads all four) */
    uint64_t meta[4];
} pyshm_consumer_t;

/* offsets exported for tests/test_layout.py */
uint64_t pyshm_layout_offset(int which);


uint64_t pyshm_get_counter(const void *hdr, int which);
void pyshm_set_counter(void *hdr, int which, uint64_t value);
int64_t pyshm_producer_pid_cas(void *hdr, int64_t expected, int64_t desired);
int pyshm_slot_claim(void *hdr, int index, int64_t expected_pid, int64_t pid);
void pyshm_slot_activate(void *hdr, int index, uint64_t position, uint64_t flags,
                         int64_t now_ns);
void pyshm_slot_read(const void *hdr, int index, int64_t *out4);
/* a gating consumer's registration, after its slot is active: counts it (seq_cst)
 * and returns the header's gate_floor; start at least there (layout.h) */
uint64_t pyshm_gate_join(void *hdr);
int pyshm_slot_release(void *hdr, int index, int64_t pid);

int pyshm_producer_open(pyshm_producer_t *p, void *hdr, uint64_t mapped_size);
int64_t pyshm_publish(pyshm_producer_t *p, const void *buf, uint64_t len, int32_t type);
int64_t pyshm_claim(pyshm_producer_t *p, uint64_t len);
int64_t pyshm_commit(pyshm_producer_t *p, int32_t type, uint64_t len);
int64_t pyshm_publish_fixed(pyshm_producer_t *p, const void *buf, uint64_t stride,
                            uint64_t len, uint64_t count, int32_t type);
int64_t pyshm_publish_var(pyshm_producer_t *p, const void *buf, const uint64_t *ends,
                          uint64_t count, int32_t type);
int64_t pyshm_room(pyshm_producer_t *p);
/* follower rings: the next record gets `sequence` (>= the next one; never mid-claim) */
int64_t pyshm_producer_set_sequence(pyshm_producer_t *p, uint64_t sequence);

int pyshm_consumer_open(pyshm_consumer_t *c, void *hdr, uint64_t mapped_size, int32_t slot);
int pyshm_consumer_seek(pyshm_consumer_t *c, int whence, uint64_t sequence);
/* pyshm_read/pyshm_wait_read: > 0 a record, the value is its payload's offset in data[]
 * (always >= 16) and meta[] describes it; 0 nothing committed; < 0 an error */
int64_t pyshm_read(pyshm_consumer_t *c);
int64_t pyshm_wait_read(pyshm_consumer_t *c, int64_t timeout_ns, int strategy);
/* the same, ending early (0) once *cancel is nonzero: `block` needs pyshm_wake_sleepers()
 * after the store, the other strategies see it within a poll step */
int64_t pyshm_wait_read_cancel(pyshm_consumer_t *c, int64_t timeout_ns, int strategy,
                               const int *cancel);
int64_t pyshm_read_batch(pyshm_consumer_t *c, uint8_t *out, uint64_t out_size,
                         uint64_t *ends, int32_t *types, uint64_t *seqs, uint64_t max);
int pyshm_still_valid(const pyshm_consumer_t *c);
void pyshm_consumer_touch(pyshm_consumer_t *c);
/* one record's payload copied into dst (proven intact by the seqlock check): 1 copied
 * (meta[] describes it), 0 nothing committed, 2 dst_room too small (need_len says how
 * much is needed; the record stays unread), < 0 an error */
int pyshm_read_into(pyshm_consumer_t *c, uint8_t *dst, uint64_t dst_room);
/* wait until tail passes the consumer's position (a record may be there), without
 * reading: 1 ready, 0 timed out or interrupted by a signal, < 0 an error. `sleeper` is
 * the bit this waiter registers in the sleepers word for PYSHM_WAIT_BLOCK (0: the
 * consumer's own slot bit; PYSHM_SLEEPER_WAKER_SHIFT: its asyncio waker's). */
int64_t pyshm_wait_data(pyshm_consumer_t *c, int64_t timeout_ns, int strategy, int sleeper);
/* the same, ending early (0) once *cancel is nonzero (`block`: and pyshm_wake_sleepers()
 * was called after the store) */
int64_t pyshm_wait_data_cancel(pyshm_consumer_t *c, int64_t timeout_ns, int strategy,
                               int sleeper, const int *cancel);
/* producers opened after this call in this process use the fence mode of the wake check
 * even where membarrier is available (tests of the fallback, measurements) */
void pyshm_wake_force_fence(int on);
/* The `block` wait of a replication engine (not a consumer): sleep in the ring's wake-up
 * protocol, under PYSHM_SLEEPER_ENGINE_BIT, until tail passes `seen_tail` or timeout_ns
 * runs out. 1 tail moved, 0 timed out or interrupted, < 0 corrupt tail. */
int64_t pyshm_engine_block(void *hdr, uint64_t seen_tail, int64_t timeout_ns);
/* Wake every sleeper of the ring once (they re-check and sleep again): how an engine's
 * stop or pause reaches its own blocked poll thread at once. */
void pyshm_wake_sleepers(void *hdr);

/* Quiescent walk (pyshm_walk): validates records reading headers only. error codes: */
#define PYSHM_WALK_E_PARAM 1     /* bad walk arguments (alignment, psize, window) */
#define PYSHM_WALK_E_STRAY 2     /* fewer than 8 bytes left before the window end */
#define PYSHM_WALK_E_PADDING 3   /* padding record that does not fill its partition */
#define PYSHM_WALK_E_LENGTH 4    /* record length out of range / past partition or end */
#define PYSHM_WALK_E_SEQUENCE 5  /* sequence not the previous one + 1 */
#define PYSHM_WALK_E_BOUNDS 6    /* record would lie outside the buffer given */

typedef struct {
    uint64_t pos;            /* in: where to start (8-aligned); out: where it stopped */
    uint64_t count;          /* records seen (accumulates over calls) */
    uint64_t first_seq;      /* valid once count > 0 */
    uint64_t last_seq;
    uint64_t payload_bytes;
    uint64_t padding_bytes;
    int64_t error_pos;       /* position of the record at fault */
    int32_t error;           /* 0 or PYSHM_WALK_E_* */
} pyshm_walk_t;

/* offset of position p in buf: (p - base) & mask (mask ~0 for an unwrapped copy).
 * Returns PYSHM_OK (stopped at until/end) or a negative code with w->error set. */
int pyshm_walk(pyshm_walk_t *w, const uint8_t *buf, uint64_t buf_len, uint64_t base,
               uint64_t mask, uint64_t end, uint64_t until, uint64_t psize,
               uint32_t max_record);

#endif /* PYSHM_RING_H */
