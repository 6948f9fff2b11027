/*
 * pyshm ring segment layout, version 1: the C mirror of pyshm/layout.py.
 *
 * Every field offset is pinned with _Static_assert, and tests/test_layout.py checks the
 * same numbers from Python, so C, Python, the RTL and docs/design.md cannot drift apart.
 *
 *   0x000 +--------------------------------------------------------------+
 *         | magic "PYSHMRNG" | version | flags | capacity | max_record   |
 *         | partitions | created_ns | creator_pid | name[48] | data_phys |
 *         | producer_pid | ring_id | origin_id                           |
 *   0x080 | tail          (producer, store_release)        128-byte span |
 *   0x088 |   wake_seq u32 (futex word) | sleepers u64 | wake_ack u64     |
 *   0x100 | tail_intent   (producer, store then fence)     128-byte span |
 *   0x140 |   gate_floor (producer) | gate_joins (gating consumers)       |
 *   0x180 | mirrored      (engine, store_release)          128-byte span |
 *   0x188 |   end-to-end lag summary (engine) | 0x1C0 probe_ack (engine)  |
 *   0x200 | next_sequence (producer)                       128-byte span |
 *   0x240 |   probe_gen | probe_pos | probe_ns (producer: lag probe)       |
 *   0x280 | consumer slots[27] {position, pid, heartbeat_ns, flags}      |
 *   0x1000+--------------------------------------------------------------+
 *         | data[capacity]                                               |
 *         +--------------------------------------------------------------+
 *
 * Record (8-byte aligned, never crosses a partition boundary):
 *   0          4          8                      16
 *   +----------+----------+----------------------+------------------------+
 *   | length   | type     | sequence (u64)       | payload ... pad to 8   |
 *   +----------+----------+----------------------+------------------------+
 * A padding record (type -1) has only length and type (>= 8 bytes, no sequence).
 */
#ifndef PYSHM_LAYOUT_H
#define PYSHM_LAYOUT_H

#include <stddef.h>
#include <stdint.h>

#define PYSHM_MAGIC "PYSHMRNG"
#define PYSHM_LAYOUT_VERSION 1u
#define PYSHM_HEADER_SIZE 0x1000u
#define PYSHM_MIN_CAPACITY 4096u
#define PYSHM_MIN_PARTITION 512u /* at most 8 partitions per 4 KiB: layout.MIN_PARTITION */
#define PYSHM_SPAN 128u
#define PYSHM_MAX_CONSUMERS 27
#define PYSHM_RECORD_HEADER 16u
#define PYSHM_RECORD_ALIGN 8u
#define PYSHM_PADDING_TYPE (-1)
#define PYSHM_PADDING_MIN 8u

/* header flags */
#define PYSHM_FLAG_LOSSLESS 0x1u
#define PYSHM_FLAG_REPLICA 0x2u
#define PYSHM_FLAG_GATE_ON_MIRROR 0x4u /* lossless: producer also waits for `mirrored` */
#define PYSHM_FLAG_EPHEMERAL 0x8u      /* disposable: `rm --stale` may remove it (no C use) */
#define PYSHM_FLAG_FOLLOWER 0x10u      /* sequences set by a bridge; producers refused */
#define PYSHM_FLAG_CRC_TABLE 0x40u     /* replica: a CRC table follows the data area */
/* consumers may sleep in the kernel (wait="block"): every producer must run the wake
 * check after each tail store. Set by the first consumer that blocks, never cleared;
 * builds that predate it refuse the ring (unknown flag) instead of never waking. */
#define PYSHM_FLAG_WAKE 0x20u

/* consumer slot flags */
#define PYSHM_SLOT_ACTIVE 0x1u
#define PYSHM_SLOT_GATING 0x2u

typedef struct {
    uint64_t value;
    uint8_t pad_[PYSHM_SPAN - 8];
} pyshm_counter_t;

/* The tail's span also carries the `block` wait strategy's words (docs/ring.md, "The
 * block wait strategy"): they share tail's cache line, which the producer writes anyway
 * and whose last store it is ordered against. */
typedef struct {
    uint64_t value;          /* 0x080 tail */
    uint32_t wake_seq;       /* 0x088 futex word: the producer adds 1 before each FUTEX_WAKE */
    uint32_t wake_reserved_; /* 0x08C zero */
    uint64_t sleepers;       /* 0x090 bit i: slot i's consumer is asleep or about to be;
                              * bit 32 + i: slot i's asyncio waker thread */
    uint64_t wake_ack;       /* 0x098 (mode << 32) | pid of the producer that runs the wake
                              * check; mode PYSHM_WAKE_FENCE or PYSHM_WAKE_MEMBARRIER */
    uint8_t pad_[PYSHM_SPAN - 32];
} pyshm_tail_span_t;

#define PYSHM_WAKE_FENCE 1u      /* producer: seq_cst fence between tail store and check */
#define PYSHM_WAKE_MEMBARRIER 2u /* producer: compiler barrier only; a sleeper must run
                                  * membarrier(GLOBAL_EXPEDITED) after registering */
#define PYSHM_SLEEPER_WAKER_SHIFT 32
/* the replication engine's poll thread (wait="block"): not a consumer slot, so a bit of
 * its own between the slots' (0..26) and the wakers' (32..) */
#define PYSHM_SLEEPER_ENGINE_BIT 27

/*
 * End-to-end lag probes (docs/design.md, "End-to-end lag"). Now and then the producer
 * stamps a committed record: its end position and the CLOCK_MONOTONIC time right after
 * the tail store, in the next_sequence span's second cache line, then bumps probe_gen.
 * The engine notes when a replica tail covering that position was published, records
 * the difference, and acknowledges with probe_ack = probe_gen; only then does the
 * producer offer the next probe. Each side writes only its own words; the producer
 * reads probe_ack (on its own line, written once per probe) only when it considers
 * stamping, so the engine's per-round stores to mirrored never touch its cache.
 */
/*
 * Gating-consumer registration (docs/design.md, "Joining a lossless ring"). A lossless
 * producer caches its gate limit and scans the slots again only when it reaches it, so a
 * consumer registering below the floor of that cached limit would not hold it back. The
 * two sides meet through a Dekker-style pair, both rare (one per slot scan, one per
 * registration), on the span's second cache line, away from the per-publish store:
 *   producer: gate_joins (acquire) -> scan -> gate_floor = max(gate_floor, low) ->
 *             seq_cst fence -> gate_joins again; a change means a registration raced
 *             the scan, so scan again;
 *   consumer: slot position and flags (release) -> gate_joins += 1 (seq_cst) ->
 *             gate_floor (seq_cst); start at gate_floor if that is above its position.
 * Either the scan saw the new slot, or the consumer saw every floor a limit was cached
 * from. gate_floor only grows, and never passes tail.
 */
typedef struct {
    uint64_t value;          /* 0x100 tail_intent */
    uint8_t line0_[56];      /* the rest of the line the producer stores on reserve */
    uint64_t gate_floor;     /* 0x140 highest floor a cached gate limit was built on */
    uint64_t gate_joins;     /* 0x148 gating registrations so far (consumers, seq_cst) */
    uint8_t pad_[PYSHM_SPAN - 0x50];
} pyshm_tail_intent_span_t;

typedef struct {
    uint64_t value;          /* 0x180 mirrored */
    uint64_t lag_samples;    /* 0x188 probes measured by the current engine */
    uint64_t lag_last_ns;    /* 0x190 the last one */
    uint64_t lag_p50_ns;     /* 0x198 percentiles since the engine started, refreshed */
    uint64_t lag_p99_ns;     /* 0x1A0   at most every few milliseconds */
    uint64_t lag_p999_ns;    /* 0x1A8 */
    uint64_t lag_max_ns;     /* 0x1B0 */
    uint64_t lag_updated_ns; /* 0x1B8 CLOCK_REALTIME of that refresh, 0: never */
    uint64_t probe_ack;      /* 0x1C0 the probe_gen the engine consumed last */
    uint8_t pad_[PYSHM_SPAN - 0x48];
} pyshm_mirrored_span_t;

typedef struct {
    uint64_t value;          /* 0x200 next_sequence */
    uint8_t line0_[56];      /* the rest of the line the producer writes on every publish */
    uint64_t probe_gen;      /* 0x240 bumped (release) after pos and ns are stored */
    uint64_t probe_pos;      /* 0x248 tail right after the stamped record */
    uint64_t probe_ns;       /* 0x250 CLOCK_MONOTONIC just after that tail store */
    uint8_t pad_[PYSHM_SPAN - 0x58];
} pyshm_next_sequence_span_t;

typedef struct {
    int64_t position;
    int64_t pid;
    int64_t heartbeat_ns;
    uint64_t flags;
    uint8_t pad_[PYSHM_SPAN - 32];
} pyshm_slot_t;

typedef struct {
    char magic[8];
    uint32_t version;
    uint32_t flags;
    uint64_t capacity;
    uint32_t max_record;
    uint32_t partition_count;
    uint64_t created_ns;
    uint64_t creator_pid;
    char name[48];
    uint64_t data_phys_addr; /* physical address of data[] for DMA, 0 if unknown */
    uint64_t producer_pid;   /* pid of the attached producer, 0 if none */
    uint64_t ring_id;        /* random nonzero identity written at creation, 0: legacy */
    uint64_t origin_id;      /* follower ring: ring_id of the ring it follows */
    pyshm_tail_span_t tail;
    pyshm_tail_intent_span_t tail_intent;
    pyshm_mirrored_span_t mirrored;
    pyshm_next_sequence_span_t next_sequence;
    pyshm_slot_t slots[PYSHM_MAX_CONSUMERS];
} pyshm_header_t;

typedef struct {
    int32_t length;
    int32_t type;
    uint64_t sequence;
} pyshm_record_t;

_Static_assert(offsetof(pyshm_header_t, version) == 0x008, "version");
_Static_assert(offsetof(pyshm_header_t, flags) == 0x00C, "flags");
_Static_assert(offsetof(pyshm_header_t, capacity) == 0x010, "capacity");
_Static_assert(offsetof(pyshm_header_t, max_record) == 0x018, "max_record");
_Static_assert(offsetof(pyshm_header_t, partition_count) == 0x01C, "partition_count");
_Static_assert(offsetof(pyshm_header_t, created_ns) == 0x020, "created_ns");
_Static_assert(offsetof(pyshm_header_t, creator_pid) == 0x028, "creator_pid");
_Static_assert(offsetof(pyshm_header_t, name) == 0x030, "name");
_Static_assert(offsetof(pyshm_header_t, data_phys_addr) == 0x060, "data_phys_addr");
_Static_assert(offsetof(pyshm_header_t, producer_pid) == 0x068, "producer_pid");
_Static_assert(offsetof(pyshm_header_t, ring_id) == 0x070, "ring_id");
_Static_assert(offsetof(pyshm_header_t, origin_id) == 0x078, "origin_id");
_Static_assert(offsetof(pyshm_header_t, tail) == 0x080, "tail");
_Static_assert(offsetof(pyshm_header_t, tail.wake_seq) == 0x088, "wake_seq");
_Static_assert(offsetof(pyshm_header_t, tail.sleepers) == 0x090, "sleepers");
_Static_assert(offsetof(pyshm_header_t, tail.wake_ack) == 0x098, "wake_ack");
_Static_assert(sizeof(pyshm_tail_span_t) == PYSHM_SPAN, "tail span");
_Static_assert(PYSHM_MAX_CONSUMERS <= PYSHM_SLEEPER_WAKER_SHIFT, "a sleeper bit per slot");
_Static_assert(PYSHM_SLEEPER_ENGINE_BIT >= PYSHM_MAX_CONSUMERS &&
               PYSHM_SLEEPER_ENGINE_BIT < PYSHM_SLEEPER_WAKER_SHIFT, "the engine's bit");
_Static_assert(offsetof(pyshm_header_t, tail_intent) == 0x100, "tail_intent");
_Static_assert(offsetof(pyshm_header_t, tail_intent.gate_floor) == 0x140, "gate_floor");
_Static_assert(offsetof(pyshm_header_t, tail_intent.gate_joins) == 0x148, "gate_joins");
_Static_assert(sizeof(pyshm_tail_intent_span_t) == PYSHM_SPAN, "tail_intent span");
_Static_assert(offsetof(pyshm_header_t, mirrored) == 0x180, "mirrored");
_Static_assert(offsetof(pyshm_header_t, next_sequence) == 0x200, "next_sequence");
_Static_assert(offsetof(pyshm_header_t, mirrored.lag_samples) == 0x188, "lag_samples");
_Static_assert(offsetof(pyshm_header_t, mirrored.lag_updated_ns) == 0x1B8, "lag_updated_ns");
_Static_assert(offsetof(pyshm_header_t, mirrored.probe_ack) == 0x1C0, "probe_ack");
_Static_assert(offsetof(pyshm_header_t, next_sequence.probe_gen) == 0x240, "probe_gen");
_Static_assert(offsetof(pyshm_header_t, next_sequence.probe_ns) == 0x250, "probe_ns");
_Static_assert(sizeof(pyshm_mirrored_span_t) == PYSHM_SPAN, "mirrored span");
_Static_assert(sizeof(pyshm_next_sequence_span_t) == PYSHM_SPAN, "next_sequence span");
_Static_assert(offsetof(pyshm_header_t, slots) == 0x280, "slots");
_Static_assert(sizeof(pyshm_slot_t) == PYSHM_SPAN, "slot size");
_Static_assert(sizeof(pyshm_header_t) == PYSHM_HEADER_SIZE, "header size");
_Static_assert(sizeof(pyshm_record_t) == PYSHM_RECORD_HEADER, "record header");
_Static_assert(offsetof(pyshm_record_t, sequence) == 8, "record sequence");

/*
 * Replica CRC table (PYSHM_FLAG_CRC_TABLE), at PYSHM_HEADER_SIZE + capacity:
 *
 *   +0x00 +----------------------------------------------------------------+
 *         | magic "PYSHMCRC" | block_shift u32 | entries u32                |
 *   +0x10 | valid_from u64: lowest position whose blocks are described     |
 *   +0x18 | table_tail u64: replica tail the entries agree with (release)  |
 *   +0x20 | reserved                                                       |
 *   +0x40 +----------------------------------------------------------------+
 *         | entries[capacity >> block_shift] u32, block b at b % entries    |
 *         +----------------------------------------------------------------+
 *
 * Block b covers positions [b << block_shift, (b + 1) << block_shift). The engine writes
 * an entry as it writes the block's bytes (the CRC32C of the bytes from the block start
 * up to where it has written: a partial block's entry grows with it), then
 * release-stores table_tail, then the replica's tail. docs/design.md has the rules.
 */
#define PYSHM_CRC_MAGIC "PYSHMCRC"
#define PYSHM_CRC_HEADER_SIZE 0x40u
#define PYSHM_CRC_MAX_BLOCK_SHIFT 16
#define PYSHM_CRC_MIN_BLOCK_SHIFT 6

typedef struct {
    char magic[8];
    uint32_t block_shift;
    uint32_t entries;
    uint64_t valid_from;
    uint64_t table_tail;
    uint8_t reserved_[PYSHM_CRC_HEADER_SIZE - 32];
} pyshm_crc_header_t;

_Static_assert(offsetof(pyshm_crc_header_t, block_shift) == 0x08, "crc block_shift");
_Static_assert(offsetof(pyshm_crc_header_t, entries) == 0x0C, "crc entries");
_Static_assert(offsetof(pyshm_crc_header_t, valid_from) == 0x10, "crc valid_from");
_Static_assert(offsetof(pyshm_crc_header_t, table_tail) == 0x18, "crc table_tail");
_Static_assert(sizeof(pyshm_crc_header_t) == PYSHM_CRC_HEADER_SIZE, "crc header size");

/*
 * Shared-memory accesses. The ordering is part of every name, as in Agrona: a plain
 * dereference of a shared counter is a bug.
 */
#define pyshm_load_acquire(p) __atomic_load_n((p), __ATOMIC_ACQUIRE)
#define pyshm_load_relaxed(p) __atomic_load_n((p), __ATOMIC_RELAXED)
#define pyshm_load_seq_cst(p) __atomic_load_n((p), __ATOMIC_SEQ_CST)
#define pyshm_store_release(p, v) __atomic_store_n((p), (v), __ATOMIC_RELEASE)
#define pyshm_store_relaxed(p, v) __atomic_store_n((p), (v), __ATOMIC_RELAXED)
#define pyshm_fence_acquire() __atomic_thread_fence(__ATOMIC_ACQUIRE)
#define pyshm_fence_release() __atomic_thread_fence(__ATOMIC_RELEASE)
#define pyshm_fence_seq_cst() __atomic_thread_fence(__ATOMIC_SEQ_CST)
/* orders the compiler only: the CPU side of an asymmetric (membarrier) pairing */
#define pyshm_compiler_barrier() __atomic_signal_fence(__ATOMIC_SEQ_CST)
#define pyshm_fetch_add_seq_cst(p, v) __atomic_fetch_add((p), (v), __ATOMIC_SEQ_CST)
#define pyshm_fetch_or_seq_cst(p, v) __atomic_fetch_or((p), (v), __ATOMIC_SEQ_CST)
#define pyshm_fetch_and_seq_cst(p, v) __atomic_fetch_and((p), (v), __ATOMIC_SEQ_CST)
#define pyshm_cas_acq_rel(p, expected, desired) \
    __atomic_compare_exchange_n((p), (expected), (desired), 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)

static inline uint64_t pyshm_align8(uint64_t n) { return (n + 7u) & ~(uint64_t)7u; }

#endif /* PYSHM_LAYOUT_H */
