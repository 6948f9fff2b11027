/*
 * pyshm mapping guard: a SIGBUS inside a pyshm mapping becomes an error, not a dead
 * process.
 *
 * A shared file that is truncated while mapped kills the next process that touches a
 * page past its new end with SIGBUS (a ring file shrunk by mistake, a full tmpfs...).
 * Every Segment registers its mapping here. The handler acts only on a fault whose
 * address lies inside a registered mapping: it replaces the whole mapping, in place,
 * with private anonymous pages (one mmap(MAP_FIXED) call, which is a plain system call
 * and safe in a handler) and, for a ring or replica, writes a poisoned header into
 * them: magic cleared, tail misaligned, tail_intent beyond the position limit. The
 * faulting instruction then runs again on readable memory, and every protocol step
 * that follows fails the way a corrupt header does:
 *   - a reader's seqlock re-check sees tail_intent >= 2^62 and reports corruption, so
 *     a record whose bytes were half lost is never returned;
 *   - the next read sees a misaligned tail (PYSHM_FIELD_TAIL);
 *   - a producer sees the gate flags change with mirrored = 0 and gets FULL within one
 *     capacity of records (its records go to private pages nobody else can see).
 * The Python layer then asks pyshm_guard_faulted() and raises SegmentTruncatedError.
 *
 * Cost: nothing on the publish/read path (no check, no setjmp); registration is one
 * table slot per mapping. Faults outside pyshm mappings go to the handler that was
 * there before (faulthandler, or the default action: the process dies as before).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "guard.h"
#include "layout.h"

#define GUARD_MAX 4096

enum { FREE = 0, ACTIVE = 1, FAULTING = 2, POISONED = 3, CLAIMED = 4 };

typedef struct {
    uintptr_t start;
    uint64_t len;
    int prot;
    int ring;            /* the mapping starts with a ring header: poison it */
    int state;           /* FREE .. CLAIMED, changed with atomics only */
} guard_range_t;

static guard_range_t ranges[GUARD_MAX];
static struct sigaction previous;
static uint64_t faults;

static int state_load(guard_range_t *r) { return __atomic_load_n(&r->state, __ATOMIC_ACQUIRE); }

static int state_cas(guard_range_t *r, int from, int to)
{
    return __atomic_compare_exchange_n(&r->state, &from, to, 0, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE);
}

static void poison(guard_range_t *r)
{
    if (r->ring && r->len >= PYSHM_HEADER_SIZE) {
        pyshm_header_t *h = (pyshm_header_t *)r->start;
        /* fresh anonymous pages are zero: magic and version already read as invalid */
        h->flags = PYSHM_FLAG_LOSSLESS | PYSHM_FLAG_GATE_ON_MIRROR;
        h->tail.value = 1;                      /* misaligned: PYSHM_FIELD_TAIL */
        h->tail_intent.value = UINT64_MAX;      /* >= PYSHM_POS_LIMIT: seqlock fails */
        h->mirrored.value = 0;                  /* a producer's gate closes */
    }
}

static void chain(int sig, siginfo_t *si, void *ctx)
{
    if ((previous.sa_flags & SA_SIGINFO) && previous.sa_sigaction != NULL) {
        previous.sa_sigaction(sig, si, ctx);
        return;
    }
    if (previous.sa_handler != SIG_DFL && previous.sa_handler != SIG_IGN &&
        previous.sa_handler != NULL) {
        previous.sa_handler(sig);
        return;
    }
    /* the default action: returning re-runs the access, which faults again and ends
     * the process with SIGBUS, as without this handler */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof(dfl));
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
}

static void on_sigbus(int sig, siginfo_t *si, void *ctx)
{
    uintptr_t a = (uintptr_t)si->si_addr;
    if (si->si_code > 0) { /* a real fault (BUS_ADRERR...), not a kill()/raise() */
        for (int i = 0; i < GUARD_MAX; i++) {
            guard_range_t *r = &ranges[i];
            int st = state_load(r);
            if (st != ACTIVE && st != FAULTING && st != POISONED) continue;
            if (a < r->start || a - r->start >= r->len) continue;
            if (st == ACTIVE && state_cas(r, ACTIVE, FAULTING)) {
                void *p = mmap((void *)r->start, r->len, PROT_READ | PROT_WRITE,
                               MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
                if (p == MAP_FAILED) {
                    __atomic_store_n(&r->state, ACTIVE, __ATOMIC_RELEASE);
                    break; /* cannot help: the default action, as before */
                }
                poison(r);
                if (!(r->prot & PROT_WRITE)) mprotect(p, r->len, PROT_READ);
                __atomic_add_fetch(&faults, 1, __ATOMIC_RELAXED);
                __atomic_store_n(&r->state, POISONED, __ATOMIC_RELEASE);
                return;
            }
            /* another thread is replacing it (or did): wait, then run the access again */
            while (state_load(r) == FAULTING) {
            }
            return;
        }
    }
    chain(sig, si, ctx);
}

int pyshm_guard_install(void)
{
    struct sigaction cur;
    if (sigaction(SIGBUS, NULL, &cur) != 0) return -1;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == on_sigbus) return 0;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    /* whatever is there now (faulthandler, installed after us, or the default) gets
     * the faults that are not ours */
    if (sigaction(SIGBUS, &sa, &previous) != 0) return -1;
    return 1;
}

int pyshm_guard_register(uintptr_t start, uint64_t len, int prot, int ring)
{
    if (pyshm_guard_install() < 0) return -1;
    for (int i = 0; i < GUARD_MAX; i++) {
        guard_range_t *r = &ranges[i];
        if (state_load(r) != FREE || !state_cas(r, FREE, CLAIMED)) continue;
        r->start = start;
        r->len = len;
        r->prot = prot;
        r->ring = ring;
        __atomic_store_n(&r->state, ACTIVE, __ATOMIC_RELEASE);
        return i;
    }
    return -1; /* table full: that mapping is simply not guarded */
}

int pyshm_guard_faulted(int index)
{
    if (index < 0 || index >= GUARD_MAX) return 0;
    return state_load(&ranges[index]) == POISONED;
}

void pyshm_guard_unregister(int index)
{
    if (index < 0 || index >= GUARD_MAX) return;
    guard_range_t *r = &ranges[index];
    for (;;) { /* never free a range while a handler is replacing its pages */
        int st = state_load(r);
        if (st == FREE || st == CLAIMED) return;
        if (st != FAULTING && state_cas(r, st, FREE)) return;
    }
}

uint64_t pyshm_guard_faults(void)
{
    return __atomic_load_n(&faults, __ATOMIC_RELAXED);
}
