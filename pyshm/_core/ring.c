/*
 * pyshm ring core: the publish and read protocols of docs/design.md ("Records and the publish and read protocols").
 *
 * Producer:  store tail_intent, release fence, write padding/record, release-store tail,
 *            then store next_sequence (a crash between the two leaves it one behind: a
 *            restarted producer takes the sequence from the last record below tail).
 * Consumer:  acquire-load tail, read the record header (and copy the payload when asked),
 *            acquire fence, reload tail_intent; the bytes were intact iff
 *            tail_intent <= position + capacity (the producer had not yet started to
 *            overwrite them). A lapped consumer jumps to the oldest partition start.
 *
 * Every number that comes out of shared memory (lengths, tail, slot positions) is checked
 * against the private, validated copy of the static header before it is used to index.
 * Positions are validated below PYSHM_POS_LIMIT (2^62) before any sum is formed, so
 * `pos + capacity` cannot wrap; every loop over shared values is bounded (each pass moves
 * a private position forward, or returns).
 */
#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/syscall.h>
#endif

#include "layout.h"
#include "ring.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define H(x) ((pyshm_header_t *)(x))

/* how many reads between heartbeat stamps: a clock read per record is wasted work */
#define HEARTBEAT_EVERY 1024u

/* `block`: how long a waiter polls before it sleeps (a record that arrives within this
 * costs no system call on either side), the longest single futex sleep when the
 * producer has not acknowledged the wake protocol (an old build, or a replica, whose
 * writer never wakes anybody), and how many wakes in a row may find nobody in the futex
 * before the producer resets the sleepers word (bits left by killed consumers). */
#define BLOCK_SPIN_NS 10000
#define BLOCK_UNACKED_MAX_NS 1000000
#define BLOCK_UNACKED_FIRST_NS 50000
#define WAKE_IDLE_RESET 64u

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int64_t wall_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------ wake-up primitives
 *
 * The `block` strategy (docs/ring.md, "The block wait strategy"). A sleeper registers
 * its bit in `sleepers`, makes that store visible to the producer (see below), checks
 * the tail once more and sleeps in FUTEX_WAIT on `wake_seq` with the value it read
 * before registering. The producer, after its release store of tail, loads `sleepers`;
 * if a bit is set it adds 1 to `wake_seq` and FUTEX_WAKEs every sleeper.
 *
 * That is the store-buffer (Dekker) pattern: producer "store tail; load sleepers",
 * sleeper "store sleepers; load tail". Without a StoreLoad barrier on both sides both
 * loads can miss both stores (x86 allows it: a store waits in the store buffer while
 * the later load executes), and the sleeper would sleep past a record. The sleeper's
 * side is a seq_cst read-modify-write plus a barrier; the producer's side is either
 *   PYSHM_WAKE_FENCE: a seq_cst fence after the tail store, which stalls every publish
 *     until its store buffer drains (measured 40-100 ns with a reader on the line), or
 *   PYSHM_WAKE_MEMBARRIER: only a compiler barrier. The producer process registered for
 *     membarrier(GLOBAL_EXPEDITED); a sleeper, after setting its bit, runs
 *     membarrier(GLOBAL_EXPEDITED), which executes a full barrier on every CPU running
 *     a registered process (a process not running passed one at its context switch).
 *     If that barrier falls before the producer's tail store, the store is visible
 *     before the sleeper's re-check; if after, the producer's load of sleepers (program
 *     order after the store, kept there by the compiler barrier) sees the bit. Either
 *     way no record is slept through, and the producer pays a plain load of a word on
 *     the line it has just written. The cost moves to the sleeper, once per sleep
 *     (~0.2 us with the producer idle, ~15 us of IPI with it running on this VM).
 */
#ifdef __linux__
static long futex_wait_ns(uint32_t *word, uint32_t expected, int64_t ns)
{
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    /* shared futex (no FUTEX_PRIVATE_FLAG): the waker is another process */
    return syscall(SYS_futex, word, FUTEX_WAIT, expected, &ts, NULL, 0);
}

static long futex_wake_all(uint32_t *word)
{
    return syscall(SYS_futex, word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

static int membarrier_global(void)
{
    return (int)syscall(SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0);
}

/* once per process: registration makes this process's CPUs take part in every
 * sleeper's membarrier(GLOBAL_EXPEDITED) */
static int membarrier_register(void)
{
    static int state; /* 0 unknown, 1 registered, -1 unavailable */
    int st = __atomic_load_n(&state, __ATOMIC_RELAXED);
    if (st == 0) {
        long q = syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        st = (q > 0 && (q & MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED) &&
              (q & MEMBARRIER_CMD_GLOBAL_EXPEDITED) &&
              syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED, 0, 0) == 0)
                 ? 1 : -1;
        __atomic_store_n(&state, st, __ATOMIC_RELAXED);
    }
    return st == 1;
}
#else
static long futex_wait_ns(uint32_t *word, uint32_t expected, int64_t ns)
{
    (void)word; (void)expected;
    struct timespec ts = {(time_t)(ns / 1000000000), (long)(ns % 1000000000)};
    nanosleep(&ts, NULL);
    return 0;
}
static long futex_wake_all(uint32_t *word) { (void)word; return 0; }
static int membarrier_global(void) { return -1; }
static int membarrier_register(void) { return 0; }
#endif

/* Clear every sleeper bit, then wake everybody: always safe, because a sleeper read
 * wake_seq before setting its bit, so the increment here (after the clear) ends its
 * FUTEX_WAIT, and it sets its bit again (with its barrier) before it sleeps again. */
static void sleepers_reset(pyshm_header_t *h)
{
    pyshm_fetch_and_seq_cst(&h->tail.sleepers, (uint64_t)0);
    pyshm_fetch_add_seq_cst(&h->tail.wake_seq, 1u);
    futex_wake_all(&h->tail.wake_seq);
}

uint64_t pyshm_layout_offset(int which)
{
    switch (which) {
    case 0: return offsetof(pyshm_header_t, magic);
    case 1: return offsetof(pyshm_header_t, version);
    case 2: return offsetof(pyshm_header_t, flags);
    case 3: return offsetof(pyshm_header_t, capacity);
    case 4: return offsetof(pyshm_header_t, max_record);
    case 5: return offsetof(pyshm_header_t, partition_count);
    case 6: return offsetof(pyshm_header_t, created_ns);
    case 7: return offsetof(pyshm_header_t, creator_pid);
    case 8: return offsetof(pyshm_header_t, name);
    case 9: return offsetof(pyshm_header_t, data_phys_addr);
    case 10: return offsetof(pyshm_header_t, producer_pid);
    case 11: return offsetof(pyshm_header_t, tail);
    case 12: return offsetof(pyshm_header_t, tail_intent);
    case 13: return offsetof(pyshm_header_t, mirrored);
    case 14: return offsetof(pyshm_header_t, next_sequence);
    case 15: return offsetof(pyshm_header_t, slots);
    case 16: return sizeof(pyshm_slot_t);
    case 17: return offsetof(pyshm_slot_t, position);
    case 18: return offsetof(pyshm_slot_t, pid);
    case 19: return offsetof(pyshm_slot_t, heartbeat_ns);
    case 20: return offsetof(pyshm_slot_t, flags);
    case 21: return sizeof(pyshm_header_t);
    case 22: return sizeof(pyshm_record_t);
    case 23: return PYSHM_MAX_CONSUMERS;
    case 24: return sizeof(((pyshm_header_t *)0)->name);
    case 25: return offsetof(pyshm_header_t, ring_id);
    case 26: return offsetof(pyshm_header_t, origin_id);
    case 27: return offsetof(pyshm_header_t, tail.wake_seq);
    case 28: return offsetof(pyshm_header_t, tail.sleepers);
    case 29: return offsetof(pyshm_header_t, tail.wake_ack);
    case 30: return offsetof(pyshm_header_t, tail_intent.gate_floor);
    case 31: return offsetof(pyshm_header_t, tail_intent.gate_joins);
    default: return UINT64_MAX;
    }
}

static volatile uint64_t *counter(void *hdr, int which)
{
    pyshm_header_t *h = H(hdr);
    switch (which) {
    case 0: return &h->tail.value;
    case 1: return &h->tail_intent.value;
    case 2: return &h->mirrored.value;
    default: return &h->next_sequence.value;
    }
}

uint64_t pyshm_get_counter(const void *hdr, int which)
{
    return pyshm_load_acquire(counter((void *)hdr, which));
}

void pyshm_set_counter(void *hdr, int which, uint64_t value)
{
    pyshm_store_release(counter(hdr, which), value);
}

int64_t pyshm_producer_pid_cas(void *hdr, int64_t expected, int64_t desired)
{
    uint64_t exp = (uint64_t)expected;
    return pyshm_cas_acq_rel(&H(hdr)->producer_pid, &exp, (uint64_t)desired) ? 1 : 0;
}

static int slot_ok(int index) { return index >= 0 && index < PYSHM_MAX_CONSUMERS; }

int pyshm_slot_claim(void *hdr, int index, int64_t expected_pid, int64_t pid)
{
    if (!slot_ok(index)) return PYSHM_E_PARAM;
    int64_t exp = expected_pid;
    return pyshm_cas_acq_rel(&H(hdr)->slots[index].pid, &exp, pid) ? 1 : 0;
}

void pyshm_slot_activate(void *hdr, int index, uint64_t position, uint64_t flags,
                         int64_t now)
{
    if (!slot_ok(index)) return;
    pyshm_slot_t *s = &H(hdr)->slots[index];
    pyshm_store_relaxed(&s->position, (int64_t)position);
    pyshm_store_relaxed(&s->heartbeat_ns, now);
    /* flags last: a producer that sees the slot gating also sees its position */
    pyshm_store_release(&s->flags, flags);
}

void pyshm_slot_read(const void *hdr, int index, int64_t *out4)
{
    if (!slot_ok(index)) return;
    pyshm_slot_t *s = &H(hdr)->slots[index];
    out4[3] = (int64_t)pyshm_load_acquire(&s->flags);
    out4[0] = pyshm_load_acquire(&s->position);
    out4[1] = pyshm_load_acquire(&s->pid);
    out4[2] = pyshm_load_acquire(&s->heartbeat_ns);
}

int pyshm_slot_release(void *hdr, int index, int64_t pid)
{
    if (!slot_ok(index)) return PYSHM_E_PARAM;
    pyshm_slot_t *s = &H(hdr)->slots[index];
    if (pyshm_load_acquire(&s->pid) != pid) return 0;
    pyshm_store_release(&s->flags, (uint64_t)0);
    int64_t exp = pid;
    return pyshm_cas_acq_rel(&s->pid, &exp, (int64_t)0) ? 1 : 0;
}

/* Validate the static header again in C: Python already did, but the C side must not
 * depend on that (the mapping is shared and could have changed since). */
static int load_static(void *hdr, uint64_t mapped_size, uint64_t *cap, uint64_t *psize,
                       uint32_t *max_record, uint32_t *flags)
{
    pyshm_header_t *h = H(hdr);
    if (mapped_size < PYSHM_HEADER_SIZE) return PYSHM_E_CORRUPT;
    if (memcmp(h->magic, PYSHM_MAGIC, 8) != 0) return PYSHM_E_CORRUPT;
    if (pyshm_load_relaxed(&h->version) != PYSHM_LAYOUT_VERSION) return PYSHM_E_CORRUPT;
    uint64_t c = pyshm_load_relaxed(&h->capacity);
    uint32_t parts = pyshm_load_relaxed(&h->partition_count);
    uint32_t mr = pyshm_load_relaxed(&h->max_record);
    if (c < PYSHM_MIN_CAPACITY || (c & (c - 1)) || c > ((uint64_t)1 << 46)) return PYSHM_E_CORRUPT;
    if (mapped_size - PYSHM_HEADER_SIZE < c) return PYSHM_E_CORRUPT;
    if (parts == 0 || (parts & (parts - 1)) || c / parts < PYSHM_MIN_PARTITION) return PYSHM_E_CORRUPT;
    uint64_t ps = c / parts;
    if (mr < PYSHM_RECORD_HEADER || mr > ps / 4) return PYSHM_E_CORRUPT;
    *cap = c;
    *psize = ps;
    *max_record = mr;
    *flags = pyshm_load_relaxed(&h->flags);
    return PYSHM_OK;
}

/* ------------------------------------------------------------------ lag probes
 *
 * The producer's half of the end-to-end lag measurement (layout.h, "End-to-end lag
 * probes"): every PYSHM_PROBE_EVERY publishes on average, if the engine acknowledged
 * the previous probe, stamp this record's end position and the time. What a publish
 * pays is a countdown; a probe costs a clock read and three stores to a line nobody
 * else writes, and a load of the engine's acknowledgement, about once per 64 records
 * and never more often than the engine consumes them. */
static uint32_t probe_interval(pyshm_producer_t *p)
{
    uint32_t x = p->probe_rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    p->probe_rng = x;
    return 1u + x % (2u * PYSHM_PROBE_EVERY - 1u);
}

static __attribute__((noinline)) void lag_probe(pyshm_producer_t *p, uint64_t end)
{
    pyshm_header_t *h = H(p->hdr);
    p->probe_countdown = probe_interval(p);
    uint64_t gen = pyshm_load_relaxed(&h->next_sequence.probe_gen);
    if (pyshm_load_acquire(&h->mirrored.probe_ack) != gen) return; /* not consumed yet */
    pyshm_store_relaxed(&h->next_sequence.probe_pos, end);
    pyshm_store_relaxed(&h->next_sequence.probe_ns, (uint64_t)now_ns());
    pyshm_store_release(&h->next_sequence.probe_gen, gen + 1);
}

/* ------------------------------------------------------------------ producer */

static int producer_corrupt(pyshm_producer_t *p, uint64_t value, int32_t field)
{
    p->last_error_pos = (int64_t)value;
    p->last_error_field = field;
    return PYSHM_E_CORRUPT;
}

/* The header's next_sequence is stored after tail, so a producer killed between the two
 * leaves it one behind (or, written by an older build that stored it first, one ahead).
 * The committed records are the truth: walk the partition that holds the last byte below
 * tail (a partition starts with a record) and continue after its last record. Every length
 * is validated; the walk covers at most one partition and moves forward each pass. */
static int reconcile_sequence(pyshm_producer_t *p)
{
    uint64_t tail = p->tail;
    if (tail == 0) return PYSHM_OK; /* nothing committed: the header's value stands */
    uint64_t start = (tail - 1) & ~(p->psize - 1);
    /* with a single partition a dead producer may already have begun the next lap over
     * this window (its intent passed start + capacity): keep the header's value then */
    if (p->intent > start + p->capacity) return PYSHM_OK;
    uint64_t pos = start, last = 0;
    int found = 0;
    while (pos < tail) {
        const uint8_t *q = p->data + (pos & p->mask);
        uint64_t room = p->psize - (pos & (p->psize - 1));
        if (tail - pos < 8) return producer_corrupt(p, pos, PYSHM_FIELD_RECORD);
        int32_t len = pyshm_load_relaxed((const int32_t *)q);
        int32_t type = pyshm_load_relaxed((const int32_t *)(q + 4));
        if (type == PYSHM_PADDING_TYPE) {
            if ((uint64_t)(int64_t)len != room) return producer_corrupt(p, pos, PYSHM_FIELD_RECORD);
            pos += room;
            continue;
        }
        uint64_t a = pyshm_align8((uint64_t)(uint32_t)len);
        if (len < (int32_t)PYSHM_RECORD_HEADER || (uint32_t)len > p->max_record ||
            a > room || a > tail - pos)
            return producer_corrupt(p, pos, PYSHM_FIELD_RECORD);
        last = pyshm_load_relaxed((const uint64_t *)(q + 8));
        found = 1;
        pos += a;
    }
    if (!found) return PYSHM_OK;
    if (last == UINT64_MAX) return producer_corrupt(p, start, PYSHM_FIELD_NEXT_SEQ);
    p->sequence = last + 1;
    pyshm_store_release(&H(p->hdr)->next_sequence.value, p->sequence);
    return PYSHM_OK;
}

/* The header's FLAG_WAKE is set (at open, or a consumer set it since): from now on every
 * tail store is followed by the wake check. Acknowledge it in wake_ack with the barrier
 * mode used, then reset the sleepers word so that every sleeper registers again under
 * that mode (one that registered before, trusting nobody, used only a fence). */
static int wake_force_fence;

void pyshm_wake_force_fence(int on)
{
    __atomic_store_n(&wake_force_fence, on != 0, __ATOMIC_RELAXED);
}

static void wake_enable(pyshm_producer_t *p)
{
    pyshm_header_t *h = H(p->hdr);
    uint32_t mode = !__atomic_load_n(&wake_force_fence, __ATOMIC_RELAXED) &&
                            membarrier_register()
                        ? PYSHM_WAKE_MEMBARRIER
                        : PYSHM_WAKE_FENCE;
    p->wake_mode = mode;
    p->wake_idle = 0;
    pyshm_store_release(&h->tail.wake_ack, ((uint64_t)mode << 32) | (uint32_t)getpid());
    sleepers_reset(h);
}

int pyshm_producer_open(pyshm_producer_t *p, void *hdr, uint64_t mapped_size)
{
    memset(p, 0, sizeof(*p));
    uint32_t flags;
    int rc = load_static(hdr, mapped_size, &p->capacity, &p->psize, &p->max_record, &flags);
    if (rc) return rc;
    pyshm_header_t *h = H(hdr);
    p->hdr = hdr;
    p->data = (uint8_t *)hdr + PYSHM_HEADER_SIZE;
    p->mask = p->capacity - 1;
    p->gate_flags = flags & (PYSHM_FLAG_LOSSLESS | PYSHM_FLAG_GATE_ON_MIRROR);
    /* a restarted producer continues where the last one committed */
    p->tail = pyshm_load_acquire(&h->tail.value);
    p->intent = pyshm_load_acquire(&h->tail_intent.value);
    p->sequence = pyshm_load_acquire(&h->next_sequence.value);
    if ((p->tail & 7u) || p->tail >= PYSHM_POS_LIMIT)
        return producer_corrupt(p, p->tail, PYSHM_FIELD_TAIL);
    if (p->intent >= PYSHM_POS_LIMIT)
        return producer_corrupt(p, p->intent, PYSHM_FIELD_INTENT);
    /* intent below tail: only a damaged header (or an old replica) has it; tail wins */
    if (p->intent < p->tail) p->intent = p->tail;
    /* a live producer never reserves more than half a partition beyond tail */
    if (p->intent - p->tail > p->capacity)
        return producer_corrupt(p, p->intent, PYSHM_FIELD_INTENT);
    rc = reconcile_sequence(p);
    if (rc) return rc;
    p->gate_limit = 0; /* force a scan on first publish */
    p->probe_rng = (uint32_t)now_ns() ^ ((uint32_t)(uintptr_t)p << 7) ^ 0x9E3779B9u;
    if (!p->probe_rng) p->probe_rng = 1;
    p->probe_countdown = probe_interval(p);
    if (flags & PYSHM_FLAG_WAKE) wake_enable(p);
    return PYSHM_OK;
}

/* Lowest position a lossless producer must not pass by more than capacity. The current
 * tail is included so that a consumer registering later (at a position >= that tail) is
 * protected by the cached limit without the producer rescanning on every publish. One
 * registering below it learns the floor through gate_floor (layout.h, "Gating-consumer
 * registration"): it is published, and a registration that raced the scan is looked for,
 * before the caller caches a limit built on it. */
static uint64_t gate_floor(pyshm_producer_t *p)
{
    pyshm_header_t *h = H(p->hdr);
    if (!(p->gate_flags & PYSHM_FLAG_LOSSLESS)) return p->tail;
    /* Ends: a registration needs a free slot and a process to claim it, so only a
     * header damaged under us could keep gate_joins moving, and then a slower scan is
     * the only effect. */
    for (;;) {
        uint64_t joins = pyshm_load_acquire(&h->tail_intent.gate_joins);
        uint64_t low = p->tail;
        for (int i = 0; i < PYSHM_MAX_CONSUMERS; i++) {
            pyshm_slot_t *s = &h->slots[i];
            uint64_t f = pyshm_load_acquire(&s->flags);
            if ((f & (PYSHM_SLOT_ACTIVE | PYSHM_SLOT_GATING)) !=
                (PYSHM_SLOT_ACTIVE | PYSHM_SLOT_GATING))
                continue;
            uint64_t pos = (uint64_t)pyshm_load_acquire(&s->position);
            if (pos < low) low = pos;
        }
        if (p->gate_flags & PYSHM_FLAG_GATE_ON_MIRROR) {
            uint64_t m = pyshm_load_acquire(&h->mirrored.value);
            if (m < low) low = m;
        }
        /* the only writer reads its own store relaxed; release: a consumer that
         * loads the floor also sees a tail at least as high (it checks floor <= tail) */
        if (low > pyshm_load_relaxed(&h->tail_intent.gate_floor))
            pyshm_store_release(&h->tail_intent.gate_floor, low);
        pyshm_fence_seq_cst();
        if (pyshm_load_relaxed(&h->tail_intent.gate_joins) == joins) return low;
    }
}

uint64_t pyshm_gate_join(void *hdr)
{
    pyshm_header_t *h = H(hdr);
    pyshm_fetch_add_seq_cst(&h->tail_intent.gate_joins, (uint64_t)1);
    return pyshm_load_seq_cst(&h->tail_intent.gate_floor);
}

/* The gate can change while the producer runs: an engine started with gate=True sets
 * FLAG_GATE_ON_MIRROR after this producer opened, and a clean stop clears it. The flags
 * word shares the read-mostly static header line, so a relaxed load per publish costs
 * next to nothing. When the gate bits change the cached limit is dropped: it may have
 * been computed without mirrored, which can lie far below the tail it used. */
static inline void refresh_gate(pyshm_producer_t *p)
{
    uint32_t all = pyshm_load_relaxed(&H(p->hdr)->flags);
    uint32_t f = all & (PYSHM_FLAG_LOSSLESS | PYSHM_FLAG_GATE_ON_MIRROR);
    if (__builtin_expect(f != p->gate_flags, 0)) {
        p->gate_flags = f;
        p->gate_limit = 0;
    }
    /* a consumer started to block since this producer opened: acknowledge before this
     * record's tail store, so that its wake check already covers it */
    if (__builtin_expect((all & PYSHM_FLAG_WAKE) && !p->wake_mode, 0)) wake_enable(p);
}

/* Room check and placement. Returns the record position, or a negative code. */
static inline int64_t reserve(pyshm_producer_t *p, uint64_t rec_len, uint64_t *pad_out,
                              uint64_t *end_out)
{
    uint64_t pos = p->tail;
    uint64_t room = p->psize - (pos & (p->psize - 1));
    uint64_t a = pyshm_align8(rec_len);
    uint64_t pad = a > room ? room : 0;
    uint64_t end = pos + pad + a;
    if (__builtin_expect(end >= PYSHM_POS_LIMIT, 0))
        return producer_corrupt(p, pos, PYSHM_FIELD_TAIL);
    refresh_gate(p);
    if (p->gate_flags && end > p->gate_limit) {
        p->gate_limit = gate_floor(p) + p->capacity;
        if (end > p->gate_limit) return PYSHM_FULL;
    }
    if (end > p->intent) {
        p->intent = end;
        pyshm_store_relaxed(&H(p->hdr)->tail_intent.value, end);
    }
    /* readers that reload tail_intent after copying must see it before any data byte */
    pyshm_fence_release();
    if (pad) {
        uint8_t *q = p->data + (pos & p->mask);
        ((int32_t *)q)[0] = (int32_t)pad;
        ((int32_t *)q)[1] = PYSHM_PADDING_TYPE;
    }
    *pad_out = pad;
    *end_out = end;
    return (int64_t)(pos + pad);
}

/* Somebody sleeps (or a bit was left behind): wake them all. Out of line, so that the
 * check inlined into every publish stays a barrier, a load and a branch. */
static __attribute__((noinline)) void wake_sleepers_now(pyshm_producer_t *p)
{
    pyshm_header_t *h = H(p->hdr);
    pyshm_fetch_add_seq_cst(&h->tail.wake_seq, 1u);
    p->wakes++;
    if (futex_wake_all(&h->tail.wake_seq) > 0) {
        p->wake_idle = 0;
    } else if (++p->wake_idle >= WAKE_IDLE_RESET) {
        /* bits nobody sleeps behind: most likely left by killed consumers */
        p->wake_idle = 0;
        sleepers_reset(h);
    }
}

/* The producer's half of the wake-up protocol (see "wake-up primitives" above). */
static inline void wake_check(pyshm_producer_t *p)
{
    pyshm_header_t *h = H(p->hdr);
    if (p->wake_mode == PYSHM_WAKE_FENCE)
        pyshm_fence_seq_cst();
    else
        pyshm_compiler_barrier();
    if (__builtin_expect(pyshm_load_relaxed(&h->tail.sleepers) != 0, 0)) wake_sleepers_now(p);
}

static inline void finish(pyshm_producer_t *p, uint64_t end)
{
    pyshm_header_t *h = H(p->hdr);
    p->tail = end;
    pyshm_store_release(&h->tail.value, end);
    /* after tail: a crash in between leaves next_sequence one behind, which a restarted
     * producer corrects from the records (reconcile_sequence); stored first, it could be
     * one ahead of a record that was never committed, with nothing to tell */
    pyshm_store_release(&h->next_sequence.value, p->sequence);
    if (__builtin_expect(--p->probe_countdown == 0, 0)) lag_probe(p, end);
    if (__builtin_expect(p->wake_mode != 0, 0)) wake_check(p);
}

static inline int64_t publish_one(pyshm_producer_t *p, const void *buf, uint64_t len,
                                  int32_t type)
{
    if (len > (uint64_t)p->max_record - PYSHM_RECORD_HEADER) return PYSHM_E_TOO_LARGE;
    uint64_t pad, end;
    int64_t pos = reserve(p, len + PYSHM_RECORD_HEADER, &pad, &end);
    if (pos < 0) return pos;
    uint8_t *q = p->data + ((uint64_t)pos & p->mask);
    pyshm_record_t *r = (pyshm_record_t *)q;
    uint64_t seq = p->sequence;
    r->length = (int32_t)(len + PYSHM_RECORD_HEADER);
    r->type = type;
    r->sequence = seq;
    memcpy(q + PYSHM_RECORD_HEADER, buf, len);
    p->sequence = seq + 1;
    finish(p, end);
    return (int64_t)seq;
}

int64_t pyshm_publish(pyshm_producer_t *p, const void *buf, uint64_t len, int32_t type)
{
    if (p->claim_len) return PYSHM_E_STATE;
    if (type == PYSHM_PADDING_TYPE) return PYSHM_E_PARAM;
    return publish_one(p, buf, len, type);
}

int64_t pyshm_claim(pyshm_producer_t *p, uint64_t len)
{
    if (p->claim_len) return PYSHM_E_STATE;
    if (len > (uint64_t)p->max_record - PYSHM_RECORD_HEADER) return PYSHM_E_TOO_LARGE;
    uint64_t pad, end;
    int64_t pos = reserve(p, len + PYSHM_RECORD_HEADER, &pad, &end);
    if (pos < 0) return pos;
    p->claim_pos = (uint64_t)pos;
    p->claim_len = (uint32_t)len + PYSHM_RECORD_HEADER;
    /* the padding is already written: remember the tail it implies in case of abort */
    p->tail += pad;
    return (int64_t)(((uint64_t)pos & p->mask) + PYSHM_RECORD_HEADER);
}

int64_t pyshm_commit(pyshm_producer_t *p, int32_t type, uint64_t len)
{
    if (!p->claim_len) return PYSHM_E_STATE;
    if (type == PYSHM_PADDING_TYPE) return PYSHM_E_PARAM;
    if (len + PYSHM_RECORD_HEADER > p->claim_len) return PYSHM_E_TOO_LARGE;
    pyshm_record_t *r = (pyshm_record_t *)(p->data + (p->claim_pos & p->mask));
    uint64_t seq = p->sequence;
    r->length = (int32_t)(len + PYSHM_RECORD_HEADER);
    r->type = type;
    r->sequence = seq;
    p->sequence = seq + 1;
    p->claim_len = 0;
    finish(p, p->claim_pos + pyshm_align8(len + PYSHM_RECORD_HEADER));
    return (int64_t)seq;
}

/* ------------------------------------------------------------------ batches
 *
 * publish_fixed/publish_var place records in runs: one room and gate check per record
 * (the same arithmetic as reserve), but one tail_intent store before the run's bytes and
 * one tail store (then next_sequence, the lag probe's countdown and the wake check) after
 * them. Publishing record by record made every record cost both sides a transfer of the
 * tail and tail_intent lines (the consumer reloads tail for the next record just as the
 * producer writes it again); a run makes that once per PYSHM_RUN_BYTES. The protocol is
 * the single record's, with the run as the unit: intent covers every byte before it is
 * written, tail moves only over committed records, and a reader sees a run entirely or
 * not at all. */
#define PYSHM_RUN_BYTES 16384u

typedef struct {
    const uint8_t *buf;
    uint64_t stride, len;    /* fixed: record i at buf + i * stride, len bytes */
    const uint64_t *ends;    /* var: record i is buf[ends[i-1] .. ends[i]) (NULL: fixed) */
} batch_src_t;

static inline void batch_record(const batch_src_t *b, uint64_t i, const uint8_t **src,
                                uint64_t *len)
{
    if (b->ends) {
        uint64_t start = i ? b->ends[i - 1] : 0;
        *src = b->buf + start;
        *len = b->ends[i] - start;
    } else {
        *src = b->buf + i * b->stride;
        *len = b->len;
    }
}

/* One run from record `first`: returns how many were committed (0: full; PYSHM_E_CORRUPT:
 * the first record would pass PYSHM_POS_LIMIT, nothing written, as publish_one refuses it).
 * A run spans at most max(its first record, min(PYSHM_RUN_BYTES, max_record)) bytes,
 * so tail_intent never leads tail by more than a single publish can make it (a
 * restarted producer, reconcile_sequence and the engines' overrun test rely on it). */
static int64_t publish_run(pyshm_producer_t *p, const batch_src_t *b, uint64_t first,
                           uint64_t count, int32_t type)
{
    const uint64_t start = p->tail;
    const uint64_t span = p->max_record < PYSHM_RUN_BYTES ? p->max_record : PYSHM_RUN_BYTES;
    uint64_t pos = start, i = first;
    refresh_gate(p);
    /* placement: the ends that reserve() would compute, stopping at the gate */
    while (i < count) {
        const uint8_t *src;
        uint64_t len;
        batch_record(b, i, &src, &len);
        uint64_t room = p->psize - (pos & (p->psize - 1));
        uint64_t a = pyshm_align8(len + PYSHM_RECORD_HEADER);
        uint64_t end = pos + (a > room ? room : 0) + a;
        if (i > first && end - start > span) break;
        if (__builtin_expect(end >= PYSHM_POS_LIMIT, 0)) {
            if (i == first) return producer_corrupt(p, pos, PYSHM_FIELD_TAIL);
            break;
        }
        if (p->gate_flags && end > p->gate_limit) {
            p->gate_limit = gate_floor(p) + p->capacity;
            if (end > p->gate_limit) break;
        }
        pos = end;
        i++;
    }
    if (i == first) return 0;
    const uint64_t run_end = pos;
    if (run_end > p->intent) {
        p->intent = run_end;
        pyshm_store_relaxed(&H(p->hdr)->tail_intent.value, run_end);
    }
    /* readers that reload tail_intent after copying must see it before any data byte */
    pyshm_fence_release();
    pos = start;
    uint64_t seq = p->sequence;
    for (uint64_t j = first; j < i; j++) {
        const uint8_t *src;
        uint64_t len;
        batch_record(b, j, &src, &len);
        uint64_t room = p->psize - (pos & (p->psize - 1));
        uint64_t a = pyshm_align8(len + PYSHM_RECORD_HEADER);
        uint8_t *q = p->data + (pos & p->mask);
        if (a > room) {
            ((int32_t *)q)[0] = (int32_t)room;
            ((int32_t *)q)[1] = PYSHM_PADDING_TYPE;
            pos += room;
            q = p->data + (pos & p->mask);
        }
        pyshm_record_t *r = (pyshm_record_t *)q;
        r->length = (int32_t)(len + PYSHM_RECORD_HEADER);
        r->type = type;
        r->sequence = seq++;
        memcpy(q + PYSHM_RECORD_HEADER, src, len);
        pos += a;
    }
    p->sequence = seq;
    /* the countdown counts records (finish() takes the run's last one); a probe due
     * within the run stamps the run's end */
    uint64_t k = i - first;
    if (p->probe_countdown > k) p->probe_countdown -= (uint32_t)(k - 1);
    else p->probe_countdown = 1;
    finish(p, run_end);
    return (int64_t)(i - first);
}

static int64_t publish_batch(pyshm_producer_t *p, const batch_src_t *b, uint64_t count,
                             int32_t type)
{
    uint64_t done = 0;
    while (done < count) {
        int64_t k = publish_run(p, b, done, count, type);
        /* records already committed are reported; the error comes with the next call */
        if (k < 0) return done ? (int64_t)done : k;
        if (k == 0) break;
        done += (uint64_t)k;
    }
    return (int64_t)done;
}

int64_t pyshm_publish_fixed(pyshm_producer_t *p, const void *buf, uint64_t stride,
                            uint64_t len, uint64_t count, int32_t type)
{
    if (p->claim_len) return PYSHM_E_STATE;
    if (type == PYSHM_PADDING_TYPE) return PYSHM_E_PARAM;
    if (len > (uint64_t)p->max_record - PYSHM_RECORD_HEADER) return PYSHM_E_TOO_LARGE;
    batch_src_t b = {(const uint8_t *)buf, stride, len, NULL};
    return publish_batch(p, &b, count, type);
}

int64_t pyshm_publish_var(pyshm_producer_t *p, const void *buf, const uint64_t *ends,
                          uint64_t count, int32_t type)
{
    if (p->claim_len) return PYSHM_E_STATE;
    if (type == PYSHM_PADDING_TYPE) return PYSHM_E_PARAM;
    uint64_t start = 0, i;
    /* validate all lengths first so that a bad list publishes nothing */
    for (i = 0; i < count; i++) {
        if (ends[i] < start) return PYSHM_E_PARAM;
        if (ends[i] - start > (uint64_t)p->max_record - PYSHM_RECORD_HEADER)
            return PYSHM_E_TOO_LARGE;
        start = ends[i];
    }
    batch_src_t b = {(const uint8_t *)buf, 0, 0, ends};
    return publish_batch(p, &b, count, type);
}

int64_t pyshm_room(pyshm_producer_t *p)
{
    refresh_gate(p);
    if (!p->gate_flags) return (int64_t)p->capacity;
    p->gate_limit = gate_floor(p) + p->capacity;
    return p->gate_limit > p->tail ? (int64_t)(p->gate_limit - p->tail) : 0;
}

/* ------------------------------------------------------------------ follower */

/* The next record gets `sequence` instead of the next number: the one departure from
 * "sequences count up by one" that a follower ring (PYSHM_FLAG_FOLLOWER) needs, whose
 * records keep the numbers of the ring they were copied from. Forward only and never
 * during a claim, so the producer's invariants hold (sequences grow; a claimed record
 * keeps the number it will be committed with). next_sequence is stored at once, so an
 * empty ring that starts at `sequence` says so to readers and to a restarted producer
 * (reconcile_sequence keeps the header's value while no record lies below tail). */
int64_t pyshm_producer_set_sequence(pyshm_producer_t *p, uint64_t sequence)
{
    if (p->claim_len) return PYSHM_E_STATE;
    if (sequence < p->sequence || sequence == UINT64_MAX) return PYSHM_E_PARAM;
    p->sequence = sequence;
    pyshm_store_release(&H(p->hdr)->next_sequence.value, sequence);
    return (int64_t)sequence;
}

/* ------------------------------------------------------------------ consumer */

int pyshm_consumer_open(pyshm_consumer_t *c, void *hdr, uint64_t mapped_size, int32_t slot)
{
    memset(c, 0, sizeof(*c));
    uint32_t flags;
    int rc = load_static(hdr, mapped_size, &c->capacity, &c->psize, &c->max_record, &flags);
    if (rc) return rc;
    if (slot >= PYSHM_MAX_CONSUMERS) return PYSHM_E_PARAM;
    c->hdr = hdr;
    c->data = (uint8_t *)hdr + PYSHM_HEADER_SIZE;
    c->mask = c->capacity - 1;
    c->slot = slot < 0 ? -1 : slot;
    return PYSHM_OK;
}

static uint64_t oldest_boundary(const pyshm_consumer_t *c, uint64_t intent)
{
    uint64_t low = intent > c->capacity ? intent - c->capacity : 0;
    return (low + c->psize - 1) & ~(c->psize - 1);
}

static int consumer_corrupt(pyshm_consumer_t *c, uint64_t value, int32_t field)
{
    c->last_error_pos = (int64_t)value;
    c->last_error_field = field;
    return PYSHM_E_CORRUPT;
}

/* tail must be 8-aligned and below PYSHM_POS_LIMIT; tail_intent below the limit. An
 * intent below tail (damage, or a replica header) is taken as tail. An intent more than a
 * capacity above tail is legal for readers: a replica resynchronised after an overrun
 * publishes such an intent, and readers wait at its oldest boundary for tail to get there. */
static int load_positions(pyshm_consumer_t *c, uint64_t *tail, uint64_t *intent)
{
    pyshm_header_t *h = H(c->hdr);
    uint64_t t = pyshm_load_acquire(&h->tail.value);
    uint64_t i = pyshm_load_acquire(&h->tail_intent.value);
    if ((t & 7u) || t >= PYSHM_POS_LIMIT) return consumer_corrupt(c, t, PYSHM_FIELD_TAIL);
    if (i >= PYSHM_POS_LIMIT) return consumer_corrupt(c, i, PYSHM_FIELD_INTENT);
    *tail = t;
    *intent = i < t ? t : i;
    return PYSHM_OK;
}

/* whence: 0 oldest, 1 latest, 2 sequence */
int pyshm_consumer_seek(pyshm_consumer_t *c, int whence, uint64_t sequence)
{
    uint64_t tail, intent;
    int rc = load_positions(c, &tail, &intent);
    if (rc) return rc;
    c->have_expect = 0;
    c->skip_below = 0;
    if (whence == 1) {
        c->pos = tail;
    } else {
        c->pos = oldest_boundary(c, intent);
        if (whence == 2) {
            c->expect = sequence;
            c->start_seq = sequence;
            c->have_expect = 1;
            c->skip_below = sequence;
        }
    }
    return PYSHM_OK;
}

/* The producer lapped c at pos: jump to the oldest boundary that tail intent (at least
 * tail) allows. That is always beyond pos for a header whose counters only grow (the
 * caller saw tail - pos > capacity or intent > pos + capacity); if it is not, the header
 * went backwards under us and looping could go on for ever: report it instead. */
static int lapped(pyshm_consumer_t *c, uint64_t pos, uint64_t tail)
{
    uint64_t intent = pyshm_load_acquire(&H(c->hdr)->tail_intent.value);
    if (intent >= PYSHM_POS_LIMIT) return consumer_corrupt(c, intent, PYSHM_FIELD_INTENT);
    if (intent < tail) intent = tail;
    uint64_t np = oldest_boundary(c, intent);
    if (np <= pos) return consumer_corrupt(c, intent, PYSHM_FIELD_INTENT);
    c->pos = np;
    c->laps++;
    return PYSHM_OK;
}

/* One record into c->msg_*. dst (optional) receives a copy of the payload, made before
 * the seqlock check so that the copy itself is proven intact.
 * Returns 1 record, 0 nothing committed, 2 record does not fit dst_room, < 0 error. */
static inline int read_one(pyshm_consumer_t *c, uint8_t *dst, uint64_t dst_room)
{
    pyshm_header_t *h = H(c->hdr);
    /* Each pass returns or moves c->pos forward (a record skipped below skip_below, a
     * padding record, a lap), and pos stays below PYSHM_POS_LIMIT, so sums cannot wrap.
     * A ring's worth of passes at most per call: a seek by sequence that skips more
     * returns 0 and the next call goes on. */
    uint64_t steps = (c->capacity >> 3) + 64;
    while (steps--) {
        uint64_t pos = c->pos;
        uint64_t tail = pyshm_load_acquire(&h->tail.value);
        if ((tail & 7u) || tail >= PYSHM_POS_LIMIT)
            return consumer_corrupt(c, tail, PYSHM_FIELD_TAIL);
        if (pos >= tail) {
            if (pos > tail) {
                uint64_t intent = pyshm_load_acquire(&h->tail_intent.value);
                /* beyond the tail but within the intent: a lap moved us to a partition
                 * the producer is filling; beyond both: the ring was reset under us */
                if (pos > intent) {
                    c->last_error_field = PYSHM_FIELD_POSITION;
                    c->last_error_pos = (int64_t)pos;
                    return PYSHM_E_AHEAD;
                }
            }
            return 0;
        }
        if (pos & 7u) return consumer_corrupt(c, pos, PYSHM_FIELD_POSITION);
        if (tail - pos > c->capacity) {
            int rc = lapped(c, pos, tail);
            if (rc) return rc;
            continue;
        }
        uint64_t off = pos & c->mask;
        uint64_t room = c->psize - (pos & (c->psize - 1));
        const uint8_t *q = c->data + off;
        int32_t len = pyshm_load_relaxed((const int32_t *)q);
        int32_t type = pyshm_load_relaxed((const int32_t *)(q + 4));
        if (type == PYSHM_PADDING_TYPE) {
            pyshm_fence_acquire();
            if (pyshm_load_relaxed(&h->tail_intent.value) > pos + c->capacity) {
                int rc = lapped(c, pos, tail);
                if (rc) return rc;
                continue;
            }
            if ((uint64_t)(int64_t)len != room) return consumer_corrupt(c, pos, PYSHM_FIELD_RECORD);
            c->pos = pos + room;
            continue;
        }
        uint64_t a = pyshm_align8((uint64_t)(uint32_t)len);
        int valid = len >= (int32_t)PYSHM_RECORD_HEADER && (uint32_t)len <= c->max_record &&
                    a <= room && pos + a <= tail;
        uint64_t seq = pyshm_load_relaxed((const uint64_t *)(q + 8));
        uint64_t plen = valid ? (uint64_t)len - PYSHM_RECORD_HEADER : 0;
        if (dst && valid) {
            if (plen > dst_room) {
                c->need_len = (uint32_t)plen;
                return 2;
            }
            memcpy(dst, q + PYSHM_RECORD_HEADER, plen);
        }
        pyshm_fence_acquire();
        if (pyshm_load_relaxed(&h->tail_intent.value) > pos + c->capacity) {
            int rc = lapped(c, pos, tail);
            if (rc) return rc;
            continue;
        }
        if (!valid) return consumer_corrupt(c, pos, PYSHM_FIELD_RECORD);
        if (seq < c->skip_below) {
            c->pos = pos + a;
            continue;
        }
        /* checked before c->pos moves: the error names this record and repeats on every
         * call instead of being skipped by the next one */
        if (c->have_expect) {
            if (seq < c->expect) return consumer_corrupt(c, pos, PYSHM_FIELD_SEQUENCE);
            c->lost += seq - c->expect;
        } else {
            c->start_seq = seq;
        }
        c->pos = pos + a;
        c->expect = seq + 1;
        c->have_expect = 1;
        c->msg_pos = pos;
        c->msg_seq = seq;
        c->msg_type = type;
        c->msg_len = (uint32_t)plen;
        c->msg_off = off + PYSHM_RECORD_HEADER;
        return 1;
    }
    return 0;
}

static inline void publish_position(pyshm_consumer_t *c)
{
    if (c->slot < 0) return;
    pyshm_slot_t *s = &H(c->hdr)->slots[c->slot];
    pyshm_store_release(&s->position, (int64_t)c->pos);
    if (++c->reads >= HEARTBEAT_EVERY) {
        c->reads = 0;
        pyshm_store_relaxed(&s->heartbeat_ns, wall_ns());
    }
}

void pyshm_consumer_touch(pyshm_consumer_t *c)
{
    if (c->slot < 0) return;
    pyshm_slot_t *s = &H(c->hdr)->slots[c->slot];
    pyshm_store_release(&s->position, (int64_t)c->pos);
    pyshm_store_relaxed(&s->heartbeat_ns, wall_ns());
}

/* The record just read, in the form the single-record Python path wants: one return
 * value that is both the "got one" flag and the payload offset, the rest in meta[]. */
static inline int64_t hand_out(pyshm_consumer_t *c, int rc)
{
    if (rc != 1) return rc;
    c->meta[0] = c->msg_len;
    c->meta[1] = (uint64_t)(int64_t)c->msg_type;
    c->meta[2] = c->msg_seq;
    c->meta[3] = c->msg_pos;
    return (int64_t)c->msg_off;
}

int64_t pyshm_read(pyshm_consumer_t *c)
{
    /* the previous zero-copy message is released only now, when the caller asks for
     * the next one: a gating slot keeps protecting the view it handed out */
    publish_position(c);
    return hand_out(c, read_one(c, NULL, 0));
}

/* Has tail passed the consumer's position (something to read, or to step over)? The
 * same tail validation as read_one: 1 yes, 0 no, < 0 corrupt. */
static inline int64_t poll_ready(pyshm_consumer_t *c)
{
    uint64_t tail = pyshm_load_acquire(&H(c->hdr)->tail.value);
    if ((tail & 7u) || tail >= PYSHM_POS_LIMIT)
        return consumer_corrupt(c, tail, PYSHM_FIELD_TAIL);
    return tail > c->pos;
}

static inline int64_t poll_read(pyshm_consumer_t *c)
{
    return hand_out(c, read_one(c, NULL, 0));
}

typedef int64_t (*poll_fn)(pyshm_consumer_t *c);

/* `block` once the record did not come by polling (see "wake-up primitives"). The
 * waiter's bit stays set across its futex sleeps and is cleared when it returns; if the
 * producer reset the word meanwhile, the fetch_or below finds the bit clear and the
 * waiter registers again, barrier included. */
static int64_t block_sleep(pyshm_consumer_t *c, int64_t deadline, poll_fn poll, int shift,
                           const int *cancel)
{
    pyshm_header_t *h = H(c->hdr);
    uint64_t bit = 0;
    if (c->slot >= 0) {
        /* only a writable attachment has a slot: it may set the flag and a bit */
        bit = (uint64_t)1 << (shift + c->slot);
        if (!(pyshm_load_relaxed(&h->flags) & PYSHM_FLAG_WAKE))
            pyshm_fetch_or_seq_cst(&h->flags, PYSHM_FLAG_WAKE);
    }
    int registered_ok = 0;
    int64_t unacked_ns = BLOCK_UNACKED_FIRST_NS;
    int64_t rc;
    for (;;) {
        /* wake_seq first: an increment after this read ends the FUTEX_WAIT below */
        uint32_t seen = __atomic_load_n(&h->tail.wake_seq, __ATOMIC_SEQ_CST);
        uint64_t ack = pyshm_load_acquire(&h->tail.wake_ack);
        uint64_t pid = pyshm_load_acquire(&h->producer_pid);
        uint32_t mode = (uint32_t)(ack >> 32);
        int acked = pid != 0 && (uint32_t)ack == (uint32_t)pid &&
                    (mode == PYSHM_WAKE_FENCE || mode == PYSHM_WAKE_MEMBARRIER);
        if (bit) {
            uint64_t old = pyshm_fetch_or_seq_cst(&h->tail.sleepers, bit);
            if (!(old & bit)) {
                if (acked && mode == PYSHM_WAKE_MEMBARRIER) {
                    registered_ok = membarrier_global() == 0;
                } else {
                    pyshm_fence_seq_cst();
                    registered_ok = 1;
                }
            }
        }
        rc = poll(c);
        if (rc != 0) break;
        /* after reading wake_seq: whoever sets *cancel then bumps wake_seq ends our wait */
        if (cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST)) break;
        int64_t now = now_ns();
        if (now >= deadline) break;
        int64_t ns = deadline - now;
        if (!(acked && registered_ok)) {
            /* nobody promised to wake us: sleep in bounded steps. With no producer at
             * all (a live ring, not a replica) the next producer's wake_enable wakes us. */
            int idle = bit && pid == 0 &&
                       !(pyshm_load_relaxed(&h->flags) & PYSHM_FLAG_REPLICA);
            if (!idle) {
                if (ns > unacked_ns) ns = unacked_ns;
                if (unacked_ns < BLOCK_UNACKED_MAX_NS) unacked_ns *= 2;
            }
        }
        c->sleeps++;
        long r = futex_wait_ns(&h->tail.wake_seq, seen, ns);
        if (r != 0) {
            if (errno == EINTR) break; /* let the caller run signal handlers */
            if (errno != EAGAIN && errno != ETIMEDOUT) {
                /* no futex on this mapping: still honour the wait */
                struct timespec ts = {0, (long)(ns < 1000000 ? ns : 1000000)};
                nanosleep(&ts, NULL);
            }
        }
    }
    if (bit) pyshm_fetch_and_seq_cst(&h->tail.sleepers, ~bit);
    return rc;
}

int64_t pyshm_engine_block(void *hdr, uint64_t seen_tail, int64_t timeout_ns)
{
    /* the consumer's machinery with the engine's bit: block_sleep uses only hdr, the
     * bit derived from slot, and the position poll_ready compares tail with */
    pyshm_consumer_t c;
    memset(&c, 0, sizeof(c));
    c.hdr = hdr;
    c.slot = PYSHM_SLEEPER_ENGINE_BIT;
    c.pos = seen_tail;
    return block_sleep(&c, now_ns() + timeout_ns, poll_ready, 0, NULL);
}

void pyshm_wake_sleepers(void *hdr)
{
    pyshm_header_t *h = H(hdr);
    pyshm_fetch_add_seq_cst(&h->tail.wake_seq, 1u);
    futex_wake_all(&h->tail.wake_seq);
}

/* The wait loops. The caller (the CPython extension releases the GIL around this) cuts
 * long waits into slices to run signal handlers; a 0 before the deadline is allowed
 * (EINTR). */
static inline int64_t wait_loop(pyshm_consumer_t *c, int64_t timeout_ns, int strategy,
                                poll_fn poll, int shift, const int *cancel)
{
    int64_t rc = poll(c);
    if (rc != 0 || timeout_ns <= 0) return rc;
    int64_t deadline = now_ns() + timeout_ns;
    if (strategy == PYSHM_WAIT_BLOCK) {
        int64_t spin_end = deadline < now_ns() + BLOCK_SPIN_NS ? deadline
                                                                : now_ns() + BLOCK_SPIN_NS;
        for (uint64_t n = 1;; n++) {
            cpu_relax();
            rc = poll(c);
            if (rc != 0) return rc;
            if ((n & 15) == 0) {
                if (cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST)) return 0;
                if (now_ns() >= spin_end) break;
            }
        }
        if (now_ns() >= deadline) return 0;
        return block_sleep(c, deadline, poll, shift, cancel);
    }
    uint64_t sleep_ns = 1000;
    for (uint64_t n = 1;; n++) {
        if (strategy == PYSHM_WAIT_SPIN) {
            cpu_relax();
        } else if (strategy == PYSHM_WAIT_YIELD) {
            if (n > 256) sched_yield(); else cpu_relax();
        } else {
            if (n > 64) {
                struct timespec ts = {0, (long)sleep_ns};
                if (nanosleep(&ts, NULL) != 0 && errno == EINTR) return 0;
                if (sleep_ns < 1000000) sleep_ns *= 2;
            } else {
                cpu_relax();
            }
        }
        rc = poll(c);
        if (rc != 0) return rc;
        if ((n & 63) == 0 || strategy != PYSHM_WAIT_SPIN) {
            if (now_ns() >= deadline) return 0;
            /* a closed reader stops here, not at the end of its slice */
            if (cancel && __atomic_load_n(cancel, __ATOMIC_SEQ_CST)) return 0;
        }
    }
}

int64_t pyshm_wait_read(pyshm_consumer_t *c, int64_t timeout_ns, int strategy)
{
    return pyshm_wait_read_cancel(c, timeout_ns, strategy, NULL);
}

int64_t pyshm_wait_read_cancel(pyshm_consumer_t *c, int64_t timeout_ns, int strategy,
                               const int *cancel)
{
    publish_position(c);
    return wait_loop(c, timeout_ns, strategy, poll_read, 0, cancel);
}

int64_t pyshm_wait_data(pyshm_consumer_t *c, int64_t timeout_ns, int strategy, int sleeper)
{
    return pyshm_wait_data_cancel(c, timeout_ns, strategy, sleeper, NULL);
}

int64_t pyshm_wait_data_cancel(pyshm_consumer_t *c, int64_t timeout_ns, int strategy,
                               int sleeper, const int *cancel)
{
    if (sleeper != 0 && sleeper != PYSHM_SLEEPER_WAKER_SHIFT) return PYSHM_E_PARAM;
    return wait_loop(c, timeout_ns, strategy, poll_ready, sleeper, cancel);
}


int pyshm_read_into(pyshm_consumer_t *c, uint8_t *dst, uint64_t dst_room)
{
    publish_position(c);
    int rc = read_one(c, dst, dst_room);
    hand_out(c, rc);
    return rc;
}

/* The records from c->pos up to one load of tail, copied to out, with every check of
 * read_one on each of them but one tail load and one seqlock check for the whole run:
 * tail_intent, loaded after the last copy, must not exceed the run's first position +
 * capacity, which proves every record of the run intact (they all lie at or after it).
 * Anything read_one would treat specially (a lap, padding that is not exact, a record
 * that does not validate or fit, a sequence to skip or one that went backwards) ends
 * the run before it; a failed seqlock check drops the whole run. Either way read_one
 * then takes that record, so errors, laps and losses are exactly its own. The consumer
 * changes only when the run is accepted. Returns the records accepted. */
static uint64_t read_run(pyshm_consumer_t *c, uint8_t *out, uint64_t out_size,
                         uint64_t *used_io, uint64_t *ends, int32_t *types, uint64_t *seqs,
                         uint64_t max)
{
    pyshm_header_t *h = H(c->hdr);
    const uint64_t first = c->pos;
    uint64_t tail = pyshm_load_acquire(&h->tail.value);
    if ((tail & 7u) || tail >= PYSHM_POS_LIMIT || first >= tail || (first & 7u) ||
        tail - first > c->capacity)
        return 0;
    uint64_t pos = first, used = *used_io, n = 0;
    uint64_t expect = c->expect, lost = c->lost, start_seq = c->start_seq;
    int have_expect = c->have_expect;
    uint64_t last_seq = 0, last_pos = 0, last_off = 0;
    int32_t last_type = 0;
    uint32_t last_len = 0;
    while (n < max && pos < tail) {
        uint64_t off = pos & c->mask;
        uint64_t room = c->psize - (pos & (c->psize - 1));
        const uint8_t *q = c->data + off;
        int32_t len = pyshm_load_relaxed((const int32_t *)q);
        int32_t type = pyshm_load_relaxed((const int32_t *)(q + 4));
        if (type == PYSHM_PADDING_TYPE) {
            if ((uint64_t)(int64_t)len != room || room > tail - pos) break;
            pos += room;
            continue;
        }
        uint64_t a = pyshm_align8((uint64_t)(uint32_t)len);
        if (len < (int32_t)PYSHM_RECORD_HEADER || (uint32_t)len > c->max_record ||
            a > room || a > tail - pos)
            break;
        uint64_t plen = (uint64_t)len - PYSHM_RECORD_HEADER;
        if (plen > out_size - used) break;
        uint64_t seq = pyshm_load_relaxed((const uint64_t *)(q + 8));
        if (seq < c->skip_below || (have_expect && seq < expect)) break;
        memcpy(out + used, q + PYSHM_RECORD_HEADER, plen);
        if (have_expect) {
            lost += seq - expect;
        } else {
            start_seq = seq;
            have_expect = 1;
        }
        expect = seq + 1;
        used += plen;
        ends[n] = used;
        types[n] = type;
        seqs[n] = seq;
        n++;
        last_seq = seq;
        last_pos = pos;
        last_off = off;
        last_type = type;
        last_len = (uint32_t)plen;
        pos += a;
    }
    if (n == 0) return 0;
    pyshm_fence_acquire();
    if (pyshm_load_relaxed(&h->tail_intent.value) > first + c->capacity) return 0;
    c->pos = pos;
    c->expect = expect;
    c->lost = lost;
    c->start_seq = start_seq;
    c->have_expect = 1;
    c->msg_pos = last_pos;
    c->msg_seq = last_seq;
    c->msg_type = last_type;
    c->msg_len = last_len;
    c->msg_off = last_off + PYSHM_RECORD_HEADER;
    *used_io = used;
    return n;
}

int64_t pyshm_read_batch(pyshm_consumer_t *c, uint8_t *out, uint64_t out_size,
                         uint64_t *ends, int32_t *types, uint64_t *seqs, uint64_t max)
{
    publish_position(c);
    uint64_t used = 0, n = 0;
    while (n < max) {
        uint64_t k = read_run(c, out, out_size, &used, ends + n, types + n, seqs + n, max - n);
        if (k) {
            n += k;
            continue;
        }
        /* whatever ended the run (or nothing there): one record the careful way */
        int rc = read_one(c, out + used, out_size - used);
        if (rc < 0) {
            if (n) break; /* hand out what was read; the error repeats on the next call */
            return rc;
        }
        if (rc != 1) break;
        used += c->msg_len;
        ends[n] = used;
        types[n] = c->msg_type;
        seqs[n] = c->msg_seq;
        n++;
    }
    publish_position(c);
    return (int64_t)n;
}

int pyshm_still_valid(const pyshm_consumer_t *c)
{
    pyshm_fence_acquire();
    return pyshm_load_relaxed(&H(c->hdr)->tail_intent.value) <= c->msg_pos + c->capacity;
}

/* ------------------------------------------------------------------ quiescent walk */

/* Validate the records of [w->pos, end) in a buffer nobody writes (a stopped ring's
 * data area, a snapshot's copy, an image mapping) reading only record headers: the
 * checks are the reader's (padding fills its partition exactly; a record's length lies
 * in [16, max_record], its aligned end stays in its partition and in the window) plus
 * consecutive sequences. No seqlock: the caller guarantees quiescence, so a header is
 * read once. Stops at the first record starting at or after `until` (a caller that
 * interleaves checksums walks in steps), at `end`, or at an error; w->pos is where it
 * stopped, w->error_pos the record at fault. Every offset is checked against buf_len
 * before it is read, whatever the window claims. */
int pyshm_walk(pyshm_walk_t *w, const uint8_t *buf, uint64_t buf_len, uint64_t base,
               uint64_t mask, uint64_t end, uint64_t until, uint64_t psize,
               uint32_t max_record)
{
    if (psize < 64 || (psize & (psize - 1)) || max_record < PYSHM_RECORD_HEADER ||
        max_record > psize || (w->pos & 7u) || w->pos > end || end >= PYSHM_POS_LIMIT) {
        w->error = PYSHM_WALK_E_PARAM;
        w->error_pos = (int64_t)w->pos;
        return PYSHM_E_PARAM;
    }
    if (until > end) until = end;
    uint64_t pos = w->pos;
    const uint64_t pmask = psize - 1;
    int rc = PYSHM_OK;
    while (pos < until) {
        uint64_t off = (pos - base) & mask;
        uint64_t room = psize - (pos & pmask);
        if (end - pos < PYSHM_PADDING_MIN) { rc = PYSHM_WALK_E_STRAY; break; }
        if (off > buf_len || buf_len - off < PYSHM_PADDING_MIN) { rc = PYSHM_WALK_E_BOUNDS; break; }
        const uint8_t *q = buf + off;
        int32_t len, type;
        memcpy(&len, q, 4);
        memcpy(&type, q + 4, 4);
        if (type == PYSHM_PADDING_TYPE) {
            if ((uint64_t)(int64_t)len != room || room > end - pos) { rc = PYSHM_WALK_E_PADDING; break; }
            if (buf_len - off < room) { rc = PYSHM_WALK_E_BOUNDS; break; }
            w->padding_bytes += room;
            pos += room;
            continue;
        }
        if (len < (int32_t)PYSHM_RECORD_HEADER || (uint32_t)len > max_record) {
            rc = PYSHM_WALK_E_LENGTH; break;
        }
        uint64_t a = pyshm_align8((uint64_t)(uint32_t)len);
        if (a > room || a > end - pos) { rc = PYSHM_WALK_E_LENGTH; break; }
        if (buf_len - off < a) { rc = PYSHM_WALK_E_BOUNDS; break; }
        uint64_t seq;
        memcpy(&seq, q + 8, 8);
        if (w->count == 0) {
            w->first_seq = seq;
        } else if (seq != w->last_seq + 1) {
            rc = PYSHM_WALK_E_SEQUENCE; break;
        }
        w->last_seq = seq;
        w->count++;
        w->payload_bytes += (uint64_t)len - PYSHM_RECORD_HEADER;
        pos += a;
    }
    w->pos = pos;
    if (rc) {
        w->error = rc;
        w->error_pos = (int64_t)pos;
        return PYSHM_E_CORRUPT;
    }
    return PYSHM_OK;
}
