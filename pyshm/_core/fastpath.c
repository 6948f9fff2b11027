/*
 * pyshm._ring_fast: the ring's hot calls as a hand-written CPython extension.
 *
 * cffi (pyshm._ring_c) stays the binding for everything else; the single-record calls
 * live here because from Python their cost was the binding, not the protocol: a cffi
 * call with argument conversion, a memoryview slice and a Python object per read
 * (docs/ring.md, "Cost of a call"). This module calls the same protocol code: ring.c is
 * compiled into it (setup.py), nothing of it is copied here.
 *
 *   Writer.publish(data, type=0, timeout=0.0)       -> sequence, or FULL (-1)
 *   Reader.read(timeout=0.0, wait="spin")           -> Message | None
 *   Reader.read_copy(timeout=0.0, wait="spin")      -> Message (data is bytes) | None
 *   Reader.read_into(buffer, timeout=0.0, wait=...) -> payload length | None
 *
 * All are METH_FASTCALL: no argument tuple, no Python frame. A Message comes from a small
 * free list and carries the record's coordinates; its payload is exported through the
 * buffer protocol, so ``bytes(m)``, ``publish(m)`` or ``np.frombuffer(m)`` read the ring
 * without any intermediate object, and ``m.data`` builds a memoryview only when asked.
 *
 * Waiting: the first poll runs with the GIL held (a record that is already there costs
 * no GIL traffic); spin, yield and block then poll a few more times with the GIL, and
 * every strategy continues in ring.c with the GIL released, in slices of 50 ms between
 * which signal handlers run and the consumer's heartbeat is stamped.
 *
 * Threads: a Reader or Writer is one cursor and is not shared. Calls are made atomic by
 * the GIL, except where a call releases it (waits, the Python slow paths); a `busy` flag
 * set for the whole call, tested and set under the GIL, turns an overlapping call from
 * a second thread into ConcurrentUseError instead of a duplicated or dropped record.
 * It costs two plain stores: a locked instruction here would drain the producer's store
 * buffer on every publish (measured 40-100 ns with a reader on the line).
 *
 * Closing under a call: close() may run while a call is inside, from another thread
 * (during a wait, or a guarded Python call such as read_batch or claim, which let the
 * GIL go) or from a signal handler run inside that very call. close() marks the object
 * closed at once and never waits for the call (it may be its own thread); a sleeping
 * `block` wait is woken, the others notice within a poll step. The call then ends with
 * ClosedError, and its end does what close() left to it: the slot (or the producer role)
 * is given back and this object's export of the mapping released, so that a ring closed
 * meanwhile is unmapped right then, after the last access, never under it.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>
#include <linux/futex.h>

#include "layout.h"
#include "ring.h"

#if defined(__x86_64__) || defined(__i386__)
#define cpu_relax() __builtin_ia32_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ __volatile__("yield" ::: "memory")
#else
#define cpu_relax() __asm__ __volatile__("" ::: "memory")
#endif

#define SLICE_NS 50000000LL   /* longest stretch in C without running signal handlers */
#define GIL_POLLS 64          /* polls with the GIL held before a wait lets it go */
#define FOREVER INT64_MAX
#define MESSAGE_FREE_MAX 32

static PyObject *InvalidParameterError, *ConcurrentUseError, *ClosedError;
/* fault injection for tests: called by read_copy between finding a record and copying
 * it, so that a test can overwrite it exactly there (tests/test_ring_robust.py) */
static PyObject *copy_hook;
static PyObject *s_spin, *s_yield, *s_sleep, *s_block, *s_timeout, *s_wait, *s_type;

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* ------------------------------------------------------------------ argument parsing */

/* Positional and keyword arguments of a METH_FASTCALL|METH_KEYWORDS call into `out`,
 * by the names in `names` (interned). Unknown or doubled names raise TypeError. */
static int parse_args(const char *fname, PyObject *const *args, Py_ssize_t nargs,
                      PyObject *kwnames, PyObject **names, int n, int required,
                      PyObject **out)
{
    for (int i = 0; i < n; i++) out[i] = NULL;
    if (nargs > n) {
        PyErr_Format(PyExc_TypeError, "%s() takes at most %d arguments (%zd given)",
                     fname, n, nargs);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) out[i] = args[i];
    if (kwnames) {
        Py_ssize_t nk = PyTuple_GET_SIZE(kwnames);
        for (Py_ssize_t k = 0; k < nk; k++) {
            PyObject *key = PyTuple_GET_ITEM(kwnames, k);
            int j;
            for (j = 0; j < n; j++) {
                if (key == names[j]) break;
            }
            if (j == n) {
                for (j = 0; j < n; j++) {
                    int eq = PyUnicode_Compare(key, names[j]);
                    if (eq == 0) break;
                    if (eq == -1 && PyErr_Occurred()) return -1;
                }
            }
            if (j == n) {
                PyErr_Format(PyExc_TypeError, "%s() got an unexpected keyword argument %R",
                             fname, key);
                return -1;
            }
            if (out[j]) {
                PyErr_Format(PyExc_TypeError, "%s() got multiple values for argument %R",
                             fname, key);
                return -1;
            }
            out[j] = args[nargs + k];
        }
    }
    for (int i = 0; i < required; i++) {
        if (!out[i]) {
            PyErr_Format(PyExc_TypeError, "%s() missing required argument %R", fname,
                         names[i]);
            return -1;
        }
    }
    return 0;
}

/* timeout in seconds -> ns: NULL or 0 -> 0 (poll once), None -> FOREVER */
static int parse_timeout(const char *fname, PyObject *t, int64_t *ns)
{
    if (t == NULL) {
        *ns = 0;
        return 0;
    }
    if (t == Py_None) {
        *ns = FOREVER;
        return 0;
    }
    double d;
    if (PyFloat_CheckExact(t)) {
        d = PyFloat_AS_DOUBLE(t);
    } else if (PyLong_Check(t) || PyFloat_Check(t)) {
        d = PyFloat_AsDouble(t);
        if (d == -1.0 && PyErr_Occurred()) return -1;
    } else {
        PyErr_Format(PyExc_TypeError, "%s(): timeout must be a number of seconds or None, "
                     "not %.100s", fname, Py_TYPE(t)->tp_name);
        return -1;
    }
    if (!(d >= 0.0)) { /* negative or NaN */
        PyErr_Format(InvalidParameterError, "%s(): timeout %R is invalid: use seconds >= 0, "
                     "or None to wait without limit", fname, t);
        return -1;
    }
    *ns = d >= 9.2e9 ? FOREVER : (int64_t)(d * 1e9);
    return 0;
}

static int parse_wait(const char *fname, PyObject *w)
{
    if (w == NULL || w == s_spin) return PYSHM_WAIT_SPIN;
    if (w == s_yield) return PYSHM_WAIT_YIELD;
    if (w == s_sleep) return PYSHM_WAIT_SLEEP;
    if (w == s_block) return PYSHM_WAIT_BLOCK;
    if (PyUnicode_Check(w)) {
        PyObject *names[4] = {s_spin, s_yield, s_sleep, s_block};
        for (int i = 0; i < 4; i++) {
            if (PyUnicode_Compare(w, names[i]) == 0) return i;
        }
        if (PyErr_Occurred()) return -1;
    }
    PyErr_Format(InvalidParameterError, "%s(): wait strategy %R: use one of spin, yield, "
                 "sleep, block", fname, w);
    return -1;
}

/* ------------------------------------------------------------------ waker (asyncio)
 *
 * A consumer's fileno(): an eventfd that a thread of this process signals once tail
 * passes the position it was armed with. The thread is plain C (it never takes the
 * GIL, so a busy event loop cannot delay it), sleeps in the ring's futex with the
 * `block` protocol under its own sleeper bit (32 + slot), and reads only the header
 * through a private copy of the consumer's struct: the consumer itself stays owned by
 * the thread that reads. A read that finds nothing re-arms it at the new position.
 */
#define DISARMED UINT64_MAX
#define WAKER_SLICE_NS 1000000000LL

typedef struct {
    pthread_t thread;
    int efd;
    int stop;               /* set once, by waker_stop */
    int signaled;           /* efd holds a count nobody drained yet */
    uint32_t ctl;           /* private futex: bumped on every arm and on stop */
    uint64_t armed_pos;     /* signal when tail passes this; DISARMED: idle */
    pyshm_consumer_t shadow; /* the thread's copy: hdr, geometry, slot, its own pos */
    uint64_t signals;       /* statistics */
} waker_t;

static long futex_private(uint32_t *word, int op, uint32_t val)
{
    return syscall(SYS_futex, word, op | FUTEX_PRIVATE_FLAG, val, NULL, NULL, 0);
}

static void *waker_main(void *arg)
{
    waker_t *w = (waker_t *)arg;
    for (;;) {
        uint32_t seen = __atomic_load_n(&w->ctl, __ATOMIC_SEQ_CST);
        if (__atomic_load_n(&w->stop, __ATOMIC_SEQ_CST)) break;
        uint64_t pos = __atomic_load_n(&w->armed_pos, __ATOMIC_SEQ_CST);
        if (pos == DISARMED) {
            futex_private(&w->ctl, FUTEX_WAIT, seen);
            continue;
        }
        w->shadow.pos = pos;
        int64_t rc = pyshm_wait_data_cancel(&w->shadow, WAKER_SLICE_NS, PYSHM_WAIT_BLOCK,
                                            PYSHM_SLEEPER_WAKER_SHIFT, &w->stop);
        if (rc == 0) continue; /* a slice ended, or stop */
        /* ready, or an error the reader will meet at its next read: signal either way,
         * unless the reader re-armed meanwhile (then wait for the new position) */
        uint64_t expected = pos;
        if (__atomic_compare_exchange_n(&w->armed_pos, &expected, DISARMED, 0,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
            __atomic_store_n(&w->signaled, 1, __ATOMIC_SEQ_CST);
            uint64_t one = 1;
            ssize_t n = write(w->efd, &one, sizeof one);
            (void)n; /* EAGAIN only if the count overflowed: readable anyway */
            w->signals++;
        }
    }
    return NULL;
}

/* with the GIL: wait for tail to pass `pos` (drains a signal nobody consumed first) */
static void waker_arm(waker_t *w, uint64_t pos)
{
    if (__atomic_load_n(&w->signaled, __ATOMIC_SEQ_CST)) {
        __atomic_store_n(&w->signaled, 0, __ATOMIC_SEQ_CST);
        uint64_t v;
        ssize_t n = read(w->efd, &v, sizeof v);
        (void)n;
    }
    if (__atomic_load_n(&w->armed_pos, __ATOMIC_SEQ_CST) == pos) return;
    __atomic_store_n(&w->armed_pos, pos, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&w->ctl, 1u, __ATOMIC_SEQ_CST);
    futex_private(&w->ctl, FUTEX_WAKE, 1);
}

static void waker_stop(waker_t *w)
{
    __atomic_store_n(&w->stop, 1, __ATOMIC_SEQ_CST);
    __atomic_fetch_add(&w->ctl, 1u, __ATOMIC_SEQ_CST);
    futex_private(&w->ctl, FUTEX_WAKE, 1);
    /* it may sleep in the ring's futex: a writable attachment kicks it; a read-only one
     * sleeps in bounded steps and sees stop within a millisecond */
    if (w->shadow.slot >= 0) pyshm_wake_sleepers(w->shadow.hdr);
    Py_BEGIN_ALLOW_THREADS
    pthread_join(w->thread, NULL);
    Py_END_ALLOW_THREADS
    close(w->efd);
    free(w);
}

/* ------------------------------------------------------------------ Reader */

typedef struct {
    PyObject_HEAD
    pyshm_consumer_t *c;
    PyObject *owner;      /* keeps *c alive (the cffi allocation) */
    PyObject *on_error;   /* callable(rc): raises the error the C code rc stands for */
    Py_buffer view;       /* the ring's data area: this export keeps the mapping alive */
    int have_view;
    int busy;
    int closed;           /* stored atomically: a wait reads it without the GIL */
    int64_t pid;          /* the slot's owner, given back at close (0: the caller does) */
    Py_ssize_t live;      /* Messages of this reader not yet freed: they point into the
                           * mapping, so the export is released when close() finds none,
                           * or with the last of them (never while a call is inside) */
    waker_t *waker;       /* fileno()'s thread and eventfd, NULL until asked for */
    pid_t waker_pid;      /* the process that started it (a forked child has no thread) */
} ReaderObject;

typedef struct {
    PyObject_HEAD
    ReaderObject *reader; /* keeps the mapping (and the consumer struct) alive */
    PyObject *copy;       /* bytes of read_copy, or NULL: the payload lies in the ring */
    uint64_t sequence;
    uint64_t position;
    uint64_t offset;      /* payload offset in the data area */
    uint32_t length;
    int32_t type;
} MessageObject;

static PyTypeObject ReaderType, WriterType, MessageType;

static MessageObject *message_free[MESSAGE_FREE_MAX];
static int message_free_n;

static PyObject *message_new(ReaderObject *r, PyObject *copy)
{
    pyshm_consumer_t *c = r->c;
    MessageObject *m;
    if (message_free_n) {
        m = message_free[--message_free_n];
        PyObject_Init((PyObject *)m, &MessageType);
    } else {
        m = PyObject_New(MessageObject, &MessageType);
        if (!m) {
            Py_XDECREF(copy);
            return NULL;
        }
    }
    Py_INCREF(r);
    r->live++;
    m->reader = r;
    m->copy = copy; /* stolen */
    m->sequence = c->meta[2];
    m->position = c->meta[3];
    m->type = (int32_t)(int64_t)c->meta[1];
    m->length = (uint32_t)c->meta[0];
    m->offset = c->msg_off;
    return (PyObject *)m;
}

static void reader_release_view(ReaderObject *r)
{
    if (r->have_view) {
        r->have_view = 0;
        PyBuffer_Release(&r->view);
    }
}

static void message_dealloc(MessageObject *m)
{
    ReaderObject *r = m->reader;
    Py_CLEAR(m->copy);
    /* a call still inside keeps the export: it releases it as it ends */
    if (--r->live == 0 && r->closed && !r->busy) reader_release_view(r);
    m->reader = NULL;
    Py_DECREF(r);
    if (message_free_n < MESSAGE_FREE_MAX)
        message_free[message_free_n++] = m;
    else
        PyObject_Free(m);
}

static int reader_usable(ReaderObject *self, const char *fname)
{
    if (self->closed) {
        PyErr_Format(ClosedError, "%s(): this consumer is closed", fname);
        return 0;
    }
    if (self->busy) {
        PyErr_Format(ConcurrentUseError, "%s(): this consumer is in use by another thread "
                     "(a Consumer is one cursor: give each thread its own, or serialise "
                     "the calls)", fname);
        return 0;
    }
    return 1;
}

static PyObject *reader_error(ReaderObject *self, int64_t rc)
{
    if (!self->on_error)
        return PyErr_Format(PyExc_SystemError, "ring C core error %lld", (long long)rc);
    PyObject *r = PyObject_CallFunction(self->on_error, "L", (long long)rc);
    if (r) {
        /* the handler must raise; if it did not, say so rather than return garbage */
        Py_DECREF(r);
        PyErr_Format(PyExc_SystemError, "ring C core error %lld", (long long)rc);
    }
    return NULL;
}

/* The GIL-released part of a wait: `consume` reads a record (the rc of pyshm_read),
 * otherwise waits for tail to pass the position (1 / 0). Returns 0 at the deadline,
 * WAIT_RAISED when a signal handler raised, WAIT_CLOSED when close() ran meanwhile
 * (whatever the wait found: a closed consumer hands out nothing). The caller has polled
 * once already. Only here can close() interleave with a Reader's own C calls. */
#define WAIT_RAISED INT64_MIN
#define WAIT_CLOSED (INT64_MIN + 1)
static int64_t reader_wait(ReaderObject *self, int64_t timeout_ns, int strategy, int consume,
                           int sleeper)
{
    pyshm_consumer_t *c = self->c;
    int64_t rc;
    if (strategy != PYSHM_WAIT_SLEEP) {
        for (int i = 0; i < GIL_POLLS; i++) {
            cpu_relax();
            rc = pyshm_wait_data(c, 0, PYSHM_WAIT_SPIN, sleeper);
            if (rc != 0) {
                if (rc > 0 && consume) {
                    rc = pyshm_read(c);
                    if (rc == 0) continue; /* padding or a skipped record: keep waiting */
                }
                return rc;
            }
        }
    }
    int64_t deadline = timeout_ns == FOREVER ? FOREVER : mono_ns() + timeout_ns;
    for (;;) {
        int64_t now = mono_ns();
        if (now >= deadline) return 0;
        int64_t slice = deadline - now < SLICE_NS ? deadline - now : SLICE_NS;
        Py_BEGIN_ALLOW_THREADS
        rc = consume ? pyshm_wait_read_cancel(c, slice, strategy, &self->closed)
                     : pyshm_wait_data_cancel(c, slice, strategy, sleeper, &self->closed);
        Py_END_ALLOW_THREADS
        if (self->closed) return WAIT_CLOSED;
        if (rc != 0) return rc;
        if (PyErr_CheckSignals() < 0) return WAIT_RAISED;
        if (self->closed) return WAIT_CLOSED; /* the handler closed it */
        pyshm_consumer_touch(c);
    }
}

/* What close() does once no call is inside (at close(), or as that call ends): give
 * the slot back while the export still holds the mapping, then release the export
 * unless Messages hold it. Runs any number of times, acts once. */
static void reader_finish_close(ReaderObject *self)
{
    pyshm_consumer_t *c = self->c;
    if (c && c->slot >= 0 && self->have_view) {
        if (self->pid) pyshm_slot_release(c->hdr, c->slot, self->pid);
        c->slot = -1; /* no later write into a slot that may be someone else's */
    }
    if (self->live == 0) reader_release_view(self);
}

/* the end of a call that marked the reader busy, on every path but the hot one (there
 * closed cannot have been set: see reader_wait) */
static void reader_exit(ReaderObject *self)
{
    self->busy = 0;
    if (self->closed) reader_finish_close(self);
}

static PyObject *reader_closed_error(const char *fname)
{
    return PyErr_Format(ClosedError, "%s(): the consumer was closed during the call",
                        fname);
}

/* the end of a call whose read or wait failed (rc < 0): out of line, so that the hot
 * paths keep a short prologue */
static __attribute__((noinline)) PyObject *reader_failed(ReaderObject *self, int64_t rc,
                                                         const char *fname)
{
    reader_exit(self);
    if (rc == WAIT_CLOSED) return reader_closed_error(fname);
    if (rc == WAIT_RAISED) return NULL;
    return reader_error(self, rc);
}

static PyObject *names_read[2];

static PyObject *Reader_read(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *a[2];
    if ((nargs || kwnames) &&
        parse_args("read", args, nargs, kwnames, names_read, 2, 0, a) < 0)
        return NULL;
    if (!reader_usable(self, "read")) return NULL;
    int64_t timeout = 0;
    int strategy = PYSHM_WAIT_SPIN;
    if (nargs || kwnames) {
        if (parse_timeout("read", a[0], &timeout) < 0) return NULL;
        if ((strategy = parse_wait("read", a[1])) < 0) return NULL;
    }
    self->busy = 1;
    int64_t rc = pyshm_read(self->c);
    if (rc == 0 && timeout) rc = reader_wait(self, timeout, strategy, 1, 0);
    if (rc > 0) {
        self->busy = 0;
        return message_new(self, NULL);
    }
    if (rc == 0) {
        self->busy = 0; /* not closed either: reader_wait would have said WAIT_CLOSED */
        if (self->waker) waker_arm(self->waker, self->c->pos);
        Py_RETURN_NONE;
    }
    return reader_failed(self, rc, "read");
}

PyDoc_STRVAR(Reader_read_doc,
"read(timeout=0.0, wait='spin') -> Message | None\n\n"
"The next record, zero-copy, or None if none came within timeout seconds (0: poll\n"
"once; None: wait without limit). wait: spin, yield, sleep or block.");

static PyObject *Reader_read_copy(ReaderObject *self, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[2];
    if ((nargs || kwnames) &&
        parse_args("read_copy", args, nargs, kwnames, names_read, 2, 0, a) < 0)
        return NULL;
    if (!reader_usable(self, "read_copy")) return NULL;
    int64_t timeout = 0;
    int strategy = PYSHM_WAIT_SPIN;
    if (nargs || kwnames) {
        if (parse_timeout("read_copy", a[0], &timeout) < 0) return NULL;
        if ((strategy = parse_wait("read_copy", a[1])) < 0) return NULL;
    }
    pyshm_consumer_t *c = self->c;
    int64_t deadline = timeout == FOREVER ? FOREVER : mono_ns() + timeout;
    /* a producer lapping every copy cannot keep this call forever: a ring's worth of
     * overwritten records at most, then None (each one counted in lost) */
    uint64_t tries = (c->capacity >> 3) + 64;
    self->busy = 1;
    while (tries--) {
        int64_t rc = pyshm_read(c);
        if (rc == 0 && timeout) {
            int64_t left = deadline == FOREVER ? FOREVER : deadline - mono_ns();
            if (left > 0) rc = reader_wait(self, left, strategy, 1, 0);
        }
        if (rc <= 0) {
            reader_exit(self);
            if (rc == 0) {
                if (self->waker) waker_arm(self->waker, c->pos);
                Py_RETURN_NONE;
            }
            if (rc == WAIT_CLOSED) return reader_closed_error("read_copy");
            if (rc == WAIT_RAISED) return NULL;
            return reader_error(self, rc);
        }
        if (copy_hook) {
            /* Python code: it may close this consumer, or let another thread do it */
            PyObject *r = PyObject_CallNoArgs(copy_hook);
            int closed = self->closed;
            if (!r || closed) {
                Py_XDECREF(r);
                reader_exit(self);
                return r ? reader_closed_error("read_copy") : NULL;
            }
            Py_DECREF(r);
        }
        PyObject *copy = PyBytes_FromStringAndSize((const char *)self->view.buf + rc,
                                                   (Py_ssize_t)c->meta[0]);
        if (!copy) {
            reader_exit(self);
            return NULL;
        }
        if (pyshm_still_valid(c)) {
            self->busy = 0;
            return message_new(self, copy);
        }
        /* overwritten while it was copied: that record is lost; the next read resyncs */
        Py_DECREF(copy);
        c->lost++;
    }
    reader_exit(self);
    Py_RETURN_NONE;
}

PyDoc_STRVAR(Reader_read_copy_doc,
"read_copy(timeout=0.0, wait='spin') -> Message | None\n\n"
"Like read(), but the payload is a bytes copy proven intact.");

static PyObject *names_read_into[3];

static PyObject *Reader_read_into(ReaderObject *self, PyObject *const *args,
                                  Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *a[3];
    if (parse_args("read_into", args, nargs, kwnames, names_read_into, 3, 1, a) < 0)
        return NULL;
    if (!reader_usable(self, "read_into")) return NULL;
    int64_t timeout = 0;
    int strategy = PYSHM_WAIT_SPIN;
    if (parse_timeout("read_into", a[1], &timeout) < 0) return NULL;
    if ((strategy = parse_wait("read_into", a[2])) < 0) return NULL;
    Py_buffer out;
    /* an export for the whole call: a bytearray cannot be resized under a wait */
    if (PyObject_GetBuffer(a[0], &out, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "read_into(): buffer must be a writable, contiguous "
                     "bytes-like object (bytearray, memoryview, numpy array), not %.100s",
                     Py_TYPE(a[0])->tp_name);
        return NULL;
    }
    pyshm_consumer_t *c = self->c;
    int64_t deadline = timeout == FOREVER ? FOREVER : mono_ns() + timeout;
    int64_t rc;
    self->busy = 1;
    for (;;) {
        rc = pyshm_read_into(c, (uint8_t *)out.buf, (uint64_t)out.len);
        if (rc != 0 || !timeout) break;
        int64_t left = deadline == FOREVER ? FOREVER : deadline - mono_ns();
        if (left <= 0) break;
        rc = reader_wait(self, left, strategy, 0, 0);
        if (rc <= 0) break; /* timed out, error, or a signal handler raised */
    }
    if (rc == 1) { /* not closed: reader_wait would have said WAIT_CLOSED */
        self->busy = 0;
        PyBuffer_Release(&out);
        return PyLong_FromUnsignedLong(c->msg_len);
    }
    reader_exit(self);
    PyBuffer_Release(&out);
    if (rc == 0) {
        if (self->waker) waker_arm(self->waker, c->pos);
        Py_RETURN_NONE;
    }
    if (rc == 2) {
        PyErr_Format(InvalidParameterError, "read_into(): the buffer of %zd bytes is too "
                     "small for the next record's %u bytes (it stays unread)", out.len,
                     c->need_len);
        return NULL;
    }
    if (rc == WAIT_CLOSED) return reader_closed_error("read_into");
    if (rc == WAIT_RAISED) return NULL;
    return reader_error(self, rc);
}

PyDoc_STRVAR(Reader_read_into_doc,
"read_into(buffer, timeout=0.0, wait='spin') -> int | None\n\n"
"Copy the next record's payload into buffer (proven intact) and return its length,\n"
"or None if none came within timeout. Creates no object for the record.");

static PyObject *names_wait[3];

/* for Python code that holds the guard (enter/leave) and waits between its own C calls */
static PyObject *Reader_wait(ReaderObject *self, PyObject *const *args, Py_ssize_t nargs,
                             PyObject *kwnames)
{
    PyObject *a[3];
    if (parse_args("wait", args, nargs, kwnames, names_wait, 3, 0, a) < 0) return NULL;
    int64_t timeout;
    int strategy;
    if (parse_timeout("wait", a[0], &timeout) < 0) return NULL;
    if ((strategy = parse_wait("wait", a[1])) < 0) return NULL;
    if (self->closed) return PyErr_Format(ClosedError, "wait(): this consumer is closed");
    int64_t rc = pyshm_wait_data(self->c, 0, PYSHM_WAIT_SPIN, 0);
    if (rc == 0 && timeout) rc = reader_wait(self, timeout, strategy, 0, 0);
    if (rc == WAIT_CLOSED) return reader_closed_error("wait");
    if (rc == WAIT_RAISED) return NULL;
    if (rc < 0) return reader_error(self, rc);
    return PyBool_FromLong(rc > 0);
}

static PyObject *Reader_enter(ReaderObject *self, PyObject *unused)
{
    if (!reader_usable(self, "consumer")) return NULL;
    self->busy = 1;
    Py_RETURN_NONE;
}

static PyObject *Reader_leave(ReaderObject *self, PyObject *unused)
{
    reader_exit(self);
    Py_RETURN_NONE;
}

static PyObject *Reader_still_valid(ReaderObject *self, PyObject *unused)
{
    if (self->closed) return PyErr_Format(ClosedError, "still_valid(): this consumer is closed");
    return PyBool_FromLong(pyshm_still_valid(self->c));
}

static void reader_stop_waker(ReaderObject *self)
{
    waker_t *w = self->waker;
    if (!w) return;
    self->waker = NULL;
    if (self->waker_pid == getpid()) {
        waker_stop(w);
    } else {
        close(w->efd); /* forked: the thread stayed in the parent */
        free(w);
    }
}

static PyObject *Reader_fileno(ReaderObject *self, PyObject *unused)
{
    if (self->closed) return PyErr_Format(ClosedError, "fileno(): this consumer is closed");
    if (self->waker && self->waker_pid != getpid()) reader_stop_waker(self);
    if (!self->waker) {
        waker_t *w = calloc(1, sizeof *w);
        if (!w) return PyErr_NoMemory();
        w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (w->efd < 0) {
            free(w);
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        memcpy(&w->shadow, self->c, sizeof w->shadow);
        w->shadow.sleeps = 0;
        w->armed_pos = self->c->pos; /* armed from the start: nothing between */
        int err = pthread_create(&w->thread, NULL, waker_main, w);
        if (err) {
            close(w->efd);
            free(w);
            errno = err;
            return PyErr_SetFromErrno(PyExc_OSError);
        }
        self->waker = w;
        self->waker_pid = getpid();
    }
    return PyLong_FromLong(self->waker->efd);
}

static PyObject *Reader_arm(ReaderObject *self, PyObject *unused)
{
    if (self->closed) return PyErr_Format(ClosedError, "arm(): this consumer is closed");
    if (self->waker) waker_arm(self->waker, self->c->pos);
    Py_RETURN_NONE;
}

static PyObject *Reader_close(ReaderObject *self, PyObject *unused)
{
    if (self->closed) Py_RETURN_NONE;
    /* the waker thread first: it reads the header, and stopping it lets the GIL go, so a
     * call inside could end meanwhile and (once closed is set) release the mapping */
    reader_stop_waker(self);
    /* before the wake-up: a woken `block` wait must find it set (see block_sleep) */
    __atomic_store_n(&self->closed, 1, __ATOMIC_SEQ_CST);
    reader_stop_waker(self); /* one that fileno() of another thread started meanwhile */
    if (self->busy) {
        /* a call of another thread, or the one a signal handler interrupted, is inside:
         * wake it if it sleeps in the futex (a read-only attachment has no slot and
         * sleeps in short steps); it finishes the close as it ends */
        if (self->c->slot >= 0) pyshm_wake_sleepers(self->c->hdr);
    } else {
        reader_finish_close(self);
    }
    Py_RETURN_NONE;
}

static PyObject *Reader_get_closed(ReaderObject *self, void *unused)
{
    return PyBool_FromLong(self->closed);
}

static PyObject *Reader_get_last(ReaderObject *self, void *which)
{
    pyshm_consumer_t *c = self->c;
    switch ((intptr_t)which) {
    case 0: return PyLong_FromUnsignedLongLong(c->meta[2]);
    case 1: return PyLong_FromLong((long)(int64_t)c->meta[1]);
    case 2: return PyLong_FromUnsignedLongLong(c->meta[3]);
    default: return PyLong_FromUnsignedLongLong(c->meta[0]);
    }
}

static PyObject *Reader_get_busy(ReaderObject *self, void *unused)
{
    return PyBool_FromLong(self->busy);
}

static int Reader_init(ReaderObject *self, PyObject *args, PyObject *kw)
{
    unsigned long long address;
    PyObject *owner, *data, *on_error;
    long long pid = 0;
    static char *kwlist[] = {"address", "owner", "data", "on_error", "pid", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KOOO|L:Reader", kwlist, &address, &owner,
                                     &data, &on_error, &pid))
        return -1;
    if (self->c) {
        PyErr_SetString(PyExc_RuntimeError, "Reader is already initialised");
        return -1;
    }
    pyshm_consumer_t *c = (pyshm_consumer_t *)(uintptr_t)address;
    if (!c || !PyCallable_Check(on_error)) {
        PyErr_SetString(PyExc_ValueError, "Reader(address, owner, data, on_error)");
        return -1;
    }
    if (PyObject_GetBuffer(data, &self->view, PyBUF_SIMPLE) < 0) return -1;
    self->have_view = 1;
    if ((uint8_t *)self->view.buf != c->data || (uint64_t)self->view.len != c->capacity) {
        PyErr_SetString(PyExc_ValueError, "Reader: data is not the consumer's data area");
        return -1;
    }
    self->c = c;
    self->pid = pid;
    Py_INCREF(owner);
    self->owner = owner;
    Py_INCREF(on_error);
    self->on_error = on_error;
    return 0;
}

static int Reader_traverse(ReaderObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->on_error);
    return 0;
}

static int Reader_clear(ReaderObject *self)
{
    Py_CLEAR(self->on_error);
    return 0;
}

static void Reader_dealloc(ReaderObject *self)
{
    PyObject_GC_UnTrack(self);
    reader_stop_waker(self);
    reader_release_view(self);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->on_error);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Reader_methods[] = {
    {"read", (PyCFunction)(void (*)(void))Reader_read, METH_FASTCALL | METH_KEYWORDS,
     Reader_read_doc},
    {"read_copy", (PyCFunction)(void (*)(void))Reader_read_copy,
     METH_FASTCALL | METH_KEYWORDS, Reader_read_copy_doc},
    {"read_into", (PyCFunction)(void (*)(void))Reader_read_into,
     METH_FASTCALL | METH_KEYWORDS, Reader_read_into_doc},
    {"wait", (PyCFunction)(void (*)(void))Reader_wait, METH_FASTCALL | METH_KEYWORDS,
     "wait(timeout, wait='spin') -> bool: wait for tail to pass the position, read nothing"},
    {"enter", (PyCFunction)Reader_enter, METH_NOARGS,
     "mark the consumer busy (ConcurrentUseError if it is)"},
    {"leave", (PyCFunction)Reader_leave, METH_NOARGS, "end what enter() began"},
    {"still_valid", (PyCFunction)Reader_still_valid, METH_NOARGS,
     "True if the last record's bytes were not overwritten yet"},
    {"close", (PyCFunction)Reader_close, METH_NOARGS, "refuse every later call"},
    {"fileno", (PyCFunction)Reader_fileno, METH_NOARGS,
     "the waker's eventfd (started on the first call, armed at the current position)"},
    {"arm", (PyCFunction)Reader_arm, METH_NOARGS,
     "drain the eventfd and wait for tail to pass the current position"},
    {NULL, NULL, 0, NULL},
};

static PyObject *Reader_get_waker_stats(ReaderObject *self, void *unused)
{
    if (!self->waker) Py_RETURN_NONE;
    return Py_BuildValue("{sKsK}", "signals", (unsigned long long)self->waker->signals,
                         "sleeps", (unsigned long long)self->waker->shadow.sleeps);
}

static PyGetSetDef Reader_getset[] = {
    {"waker_stats", (getter)Reader_get_waker_stats, NULL,
     "{signals, sleeps} of the fileno() thread, None before fileno()", NULL},
    {"last_sequence", (getter)Reader_get_last, NULL, "sequence of the last record read",
     (void *)0},
    {"last_type", (getter)Reader_get_last, NULL, "type of the last record read", (void *)1},
    {"last_position", (getter)Reader_get_last, NULL, "position of the last record read",
     (void *)2},
    {"last_length", (getter)Reader_get_last, NULL, "payload length of the last record read",
     (void *)3},
    {"busy", (getter)Reader_get_busy, NULL, "a call is in progress", NULL},
    {"closed", (getter)Reader_get_closed, NULL, "close() ran", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ReaderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyshm._ring_fast.Reader",
    .tp_basicsize = sizeof(ReaderObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Reader_traverse,
    .tp_clear = (inquiry)Reader_clear,
    .tp_free = PyObject_GC_Del,
    .tp_doc = "The hot calls of one Consumer (pyshm.ring builds it; not public).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Reader_init,
    .tp_dealloc = (destructor)Reader_dealloc,
    .tp_methods = Reader_methods,
    .tp_getset = Reader_getset,
};

/* ------------------------------------------------------------------ Message */

static PyObject *Message_get_data(MessageObject *m, void *unused)
{
    if (m->copy) {
        Py_INCREF(m->copy);
        return m->copy;
    }
    /* a view whose exporter is this Message (which holds the mapping): built per access,
     * never cached, since a cached view would be a reference cycle */
    return PyMemoryView_FromObject((PyObject *)m);
}

static PyObject *Message_get_int(MessageObject *m, void *which)
{
    switch ((intptr_t)which) {
    case 0: return PyLong_FromUnsignedLongLong(m->sequence);
    case 1: return PyLong_FromLong(m->type);
    default: return PyLong_FromUnsignedLongLong(m->position);
    }
}

static int Message_getbuffer(MessageObject *m, Py_buffer *view, int flags)
{
    if (m->copy) {
        return PyBuffer_FillInfo(view, (PyObject *)m, PyBytes_AS_STRING(m->copy),
                                 PyBytes_GET_SIZE(m->copy), 1, flags);
    }
    ReaderObject *r = m->reader;
    return PyBuffer_FillInfo(view, (PyObject *)m, (char *)r->view.buf + m->offset,
                             (Py_ssize_t)m->length, r->view.readonly, flags);
}

static Py_ssize_t Message_length(MessageObject *m)
{
    return m->copy ? PyBytes_GET_SIZE(m->copy) : (Py_ssize_t)m->length;
}

static PyObject *Message_still_valid(MessageObject *m, PyObject *unused)
{
    if (m->copy) Py_RETURN_TRUE;
    const pyshm_consumer_t *c = m->reader->c;
    const pyshm_header_t *h = (const pyshm_header_t *)c->hdr;
    pyshm_fence_acquire();
    uint64_t intent = pyshm_load_relaxed(&h->tail_intent.value);
    return PyBool_FromLong(intent <= m->position + c->capacity);
}

static PyObject *Message_repr(MessageObject *m)
{
    return PyUnicode_FromFormat("<Message seq=%llu type=%d len=%zd pos=%llu%s>",
                                (unsigned long long)m->sequence, (int)m->type,
                                Message_length(m), (unsigned long long)m->position,
                                m->copy ? " copy" : "");
}

static PyObject *Message_new_refused(PyTypeObject *t, PyObject *a, PyObject *k)
{
    PyErr_SetString(PyExc_TypeError, "Message objects come from Consumer.read()");
    return NULL;
}

static PyGetSetDef Message_getset[] = {
    {"data", (getter)Message_get_data, NULL,
     "the payload: a memoryview into the ring (read), or bytes (read_copy)", NULL},
    {"sequence", (getter)Message_get_int, NULL, "the record's sequence number", (void *)0},
    {"type", (getter)Message_get_int, NULL, "the record's type", (void *)1},
    {"position", (getter)Message_get_int, NULL, "the record's position in the ring",
     (void *)2},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyMethodDef Message_methods[] = {
    {"still_valid", (PyCFunction)Message_still_valid, METH_NOARGS,
     "still_valid() -> bool\n\nTrue if the payload was not overwritten yet (always True "
     "for a copy).\nCheck it after using the data of an overwrite ring's message."},
    {NULL, NULL, 0, NULL},
};

static PyBufferProcs Message_as_buffer = {(getbufferproc)Message_getbuffer, NULL};
static PySequenceMethods Message_as_sequence = {.sq_length = (lenfunc)Message_length};

PyDoc_STRVAR(Message_doc,
"One record from Consumer.read()/read_copy().\n\n"
"data is a memoryview into the ring, valid until the consumer's next read (in overwrite\n"
"mode confirm with still_valid() after using it), or bytes for read_copy(). The Message\n"
"itself exports the payload through the buffer protocol: bytes(m), publish(m) and\n"
"numpy.frombuffer(m) read it without building a memoryview first.");

static PyTypeObject MessageType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyshm.Message",
    .tp_basicsize = sizeof(MessageObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Message_doc,
    .tp_new = Message_new_refused,
    .tp_dealloc = (destructor)message_dealloc,
    .tp_repr = (reprfunc)Message_repr,
    .tp_as_buffer = &Message_as_buffer,
    .tp_as_sequence = &Message_as_sequence,
    .tp_getset = Message_getset,
    .tp_methods = Message_methods,
};

/* ------------------------------------------------------------------ Writer */

typedef struct {
    PyObject_HEAD
    pyshm_producer_t *p;
    PyObject *owner;
    PyObject *slow;   /* callable(rc, data, type, timeout, nbytes): FULL with a timeout,
                       * or an error to raise */
    Py_buffer view;   /* the ring's data area: keeps the mapping alive while a call of
                       * another thread (claim, a batch, a wait for room) is inside it */
    int have_view;
    int busy;
    int closed;
    int64_t pid;      /* the producer role's owner, given back at close (0: the caller) */
} WriterObject;

static void writer_release_view(WriterObject *w)
{
    if (w->have_view) {
        w->have_view = 0;
        PyBuffer_Release(&w->view);
    }
}

/* close() once no call is inside: the producer role goes back (pid 0 in the header,
 * while the export still holds the mapping), then the export. Acts once. */
static void writer_finish_close(WriterObject *w)
{
    if (w->have_view && w->pid) pyshm_producer_pid_cas(w->p->hdr, w->pid, 0);
    writer_release_view(w);
}

static int writer_usable(WriterObject *self, const char *fname)
{
    if (self->closed) {
        PyErr_Format(ClosedError, "%s(): this producer is closed", fname);
        return 0;
    }
    if (self->busy) {
        PyErr_Format(ConcurrentUseError, "%s(): this producer is in use by another thread "
                     "(one ring has one producer: serialise the calls)", fname);
        return 0;
    }
    return 1;
}

/* The payload of `data`: bytes, a Message and a contiguous memoryview without an export;
 * anything else through the buffer protocol (*view then needs releasing). */
static int payload_of(PyObject *data, const char **buf, Py_ssize_t *len, Py_buffer *view,
                      int *release)
{
    *release = 0;
    PyTypeObject *t = Py_TYPE(data);
    if (t == &PyBytes_Type) {
        *buf = PyBytes_AS_STRING(data);
        *len = PyBytes_GET_SIZE(data);
        return 0;
    }
    if (t == &MessageType) {
        MessageObject *m = (MessageObject *)data;
        if (m->copy) {
            *buf = PyBytes_AS_STRING(m->copy);
            *len = PyBytes_GET_SIZE(m->copy);
        } else {
            *buf = (const char *)m->reader->view.buf + m->offset;
            *len = m->length;
        }
        return 0;
    }
    if (t == &PyMemoryView_Type &&
        !(((PyMemoryViewObject *)data)->flags & _Py_MEMORYVIEW_RELEASED)) {
        /* a released view keeps a stale pointer: it goes the GetBuffer way (an error) */
        Py_buffer *v = PyMemoryView_GET_BUFFER(data);
        if (v->buf && PyBuffer_IsContiguous(v, 'C')) {
            *buf = v->buf;
            *len = v->len;
            return 0;
        }
    }
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0) {
        PyErr_Clear();
        if (PyUnicode_Check(data))
            PyErr_Format(PyExc_TypeError, "publish(): data must be bytes-like (bytes, "
                         "bytearray, memoryview, a Message, a contiguous numpy array), not "
                         "str: encode text first, e.g. publish(text.encode())");
        else
            PyErr_Format(PyExc_TypeError, "publish(): data must be bytes-like (bytes, "
                         "bytearray, memoryview, a Message, a contiguous numpy array), not "
                         "%.100s", t->tp_name);
        return -1;
    }
    *buf = view->buf;
    *len = view->len;
    *release = 1;
    return 0;
}

static int parse_type(const char *fname, PyObject *t, int32_t *out)
{
    if (t == NULL) {
        *out = 0;
        return 0;
    }
    if (!PyLong_Check(t)) {
        PyErr_Format(PyExc_TypeError, "%s(): type must be an int in [-2147483648, "
                     "2147483647] other than -1, not %.100s", fname, Py_TYPE(t)->tp_name);
        return -1;
    }
    int overflow;
    long long v = PyLong_AsLongLongAndOverflow(t, &overflow);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (overflow || v < INT32_MIN || v > INT32_MAX || v == PYSHM_PADDING_TYPE) {
        PyErr_Format(InvalidParameterError, "%s(): type %R is invalid: use an int in "
                     "[-2147483648, 2147483647] other than -1 (type -1 is reserved for "
                     "padding records)", fname, t);
        return -1;
    }
    *out = (int32_t)v;
    return 0;
}

/* publish() past its first attempt: waiting for room (reaping dead gating consumers) or
 * raising, in Python, still busy. Out of line: the hot path keeps its short prologue. */
static __attribute__((noinline)) PyObject *
writer_publish_slow(WriterObject *self, int64_t rc, PyObject *data, int32_t type,
                    PyObject *timeout, Py_ssize_t len)
{
    if (!self->slow) {
        self->busy = 0;
        return PyErr_Format(ClosedError, "publish(): this producer is closed");
    }
    PyObject *r = PyObject_CallFunction(self->slow, "LOiOn", (long long)rc, data, (int)type,
                                        timeout ? timeout : Py_None, len);
    self->busy = 0;
    if (self->closed) {
        writer_finish_close(self);
        /* closed while it waited for room: FULL would read as "retry later"; a record
         * published before the close was noticed keeps its sequence number */
        int overflow = 0;
        if (r && PyLong_Check(r) &&
            PyLong_AsLongLongAndOverflow(r, &overflow) == PYSHM_FULL) {
            Py_DECREF(r);
            return PyErr_Format(ClosedError, "publish(): the producer was closed during "
                                "the call");
        }
    }
    return r;
}

static PyObject *names_publish[3];

static PyObject *Writer_publish(WriterObject *self, PyObject *const *args, Py_ssize_t nargs,
                                PyObject *kwnames)
{
    PyObject *a[3];
    if (nargs == 1 && !kwnames) {
        a[0] = args[0];
        a[1] = a[2] = NULL;
    } else if (parse_args("publish", args, nargs, kwnames, names_publish, 3, 1, a) < 0) {
        return NULL;
    }
    if (!writer_usable(self, "publish")) return NULL;
    int32_t type;
    if (parse_type("publish", a[1], &type) < 0) return NULL;
    const char *buf;
    Py_ssize_t len;
    Py_buffer view;
    int release;
    if (payload_of(a[0], &buf, &len, &view, &release) < 0) return NULL;
    self->busy = 1;
    int64_t rc = pyshm_publish(self->p, buf, (uint64_t)len, type);
    if (release) PyBuffer_Release(&view);
    if (rc >= 0) {
        self->busy = 0;
        return PyLong_FromLongLong(rc);
    }
    if (rc == PYSHM_FULL && (a[2] == NULL || (PyFloat_CheckExact(a[2]) &&
                                              PyFloat_AS_DOUBLE(a[2]) == 0.0))) {
        self->busy = 0;
        return PyLong_FromLong(PYSHM_FULL);
    }
    return writer_publish_slow(self, rc, a[0], type, a[2], len);
}

PyDoc_STRVAR(Writer_publish_doc,
"publish(data, type=0, timeout=0.0) -> int\n\n"
"Append one record; return its sequence number, or FULL (-1) if a lossless ring\n"
"stayed full for timeout seconds.");

/* one attempt, for the Python slow path that already holds the guard */
static PyObject *Writer_publish_once(WriterObject *self, PyObject *const *args,
                                     Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "_publish_once(data, type)");
        return NULL;
    }
    if (self->closed) return PyErr_Format(ClosedError, "publish(): this producer is closed");
    int32_t type;
    if (parse_type("publish", args[1], &type) < 0) return NULL;
    const char *buf;
    Py_ssize_t len;
    Py_buffer view;
    int release;
    if (payload_of(args[0], &buf, &len, &view, &release) < 0) return NULL;
    int64_t rc = pyshm_publish(self->p, buf, (uint64_t)len, type);
    if (release) PyBuffer_Release(&view);
    return PyLong_FromLongLong(rc);
}

static PyObject *Writer_enter(WriterObject *self, PyObject *unused)
{
    if (!writer_usable(self, "producer")) return NULL;
    self->busy = 1;
    Py_RETURN_NONE;
}

static PyObject *Writer_leave(WriterObject *self, PyObject *unused)
{
    self->busy = 0;
    if (self->closed) writer_finish_close(self);
    Py_RETURN_NONE;
}

static PyObject *Writer_close(WriterObject *self, PyObject *unused)
{
    if (self->closed) Py_RETURN_NONE;
    self->closed = 1;
    /* a call inside (another thread's, or the one a signal handler interrupted) finishes
     * the close as it ends: the role and the mapping stay its own until then */
    if (!self->busy) writer_finish_close(self);
    Py_RETURN_NONE;
}

static PyObject *Writer_get_busy(WriterObject *self, void *unused)
{
    return PyBool_FromLong(self->busy);
}

static int Writer_init(WriterObject *self, PyObject *args, PyObject *kw)
{
    unsigned long long address;
    PyObject *owner, *slow, *data = NULL;
    long long pid = 0;
    static char *kwlist[] = {"address", "owner", "slow", "data", "pid", NULL};
    if (!PyArg_ParseTupleAndKeywords(args, kw, "KOO|OL:Writer", kwlist, &address, &owner,
                                     &slow, &data, &pid))
        return -1;
    if (self->p) {
        PyErr_SetString(PyExc_RuntimeError, "Writer is already initialised");
        return -1;
    }
    if (!address || !PyCallable_Check(slow)) {
        PyErr_SetString(PyExc_ValueError, "Writer(address, owner, slow)");
        return -1;
    }
    if (data && data != Py_None) {
        if (PyObject_GetBuffer(data, &self->view, PyBUF_SIMPLE) < 0) return -1;
        self->have_view = 1;
    }
    self->p = (pyshm_producer_t *)(uintptr_t)address;
    self->pid = pid;
    Py_INCREF(owner);
    self->owner = owner;
    Py_INCREF(slow);
    self->slow = slow;
    return 0;
}

static int Writer_traverse(WriterObject *self, visitproc visit, void *arg)
{
    Py_VISIT(self->owner);
    Py_VISIT(self->slow);
    return 0;
}

static int Writer_clear(WriterObject *self)
{
    Py_CLEAR(self->slow);
    return 0;
}

static void Writer_dealloc(WriterObject *self)
{
    PyObject_GC_UnTrack(self);
    writer_release_view(self);
    Py_CLEAR(self->owner);
    Py_CLEAR(self->slow);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Writer_methods[] = {
    {"publish", (PyCFunction)(void (*)(void))Writer_publish, METH_FASTCALL | METH_KEYWORDS,
     Writer_publish_doc},
    {"_publish_once", (PyCFunction)(void (*)(void))Writer_publish_once, METH_FASTCALL,
     "one attempt without the guard: only for the slow path publish() calls"},
    {"enter", (PyCFunction)Writer_enter, METH_NOARGS,
     "mark the producer busy (ConcurrentUseError if it is)"},
    {"leave", (PyCFunction)Writer_leave, METH_NOARGS, "end what enter() began"},
    {"close", (PyCFunction)Writer_close, METH_NOARGS, "refuse every later call"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Writer_getset[] = {
    {"busy", (getter)Writer_get_busy, NULL, "a call is in progress", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject WriterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "pyshm._ring_fast.Writer",
    .tp_basicsize = sizeof(WriterObject),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_traverse = (traverseproc)Writer_traverse,
    .tp_clear = (inquiry)Writer_clear,
    .tp_free = PyObject_GC_Del,
    .tp_doc = "The hot calls of one Producer (pyshm.ring builds it; not public).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Writer_init,
    .tp_dealloc = (destructor)Writer_dealloc,
    .tp_methods = Writer_methods,
    .tp_getset = Writer_getset,
};

/* ------------------------------------------------------------------ module */

static PyObject *intern(const char *s)
{
    return PyUnicode_InternFromString(s);
}

static PyObject *inject_before_copy(PyObject *mod, PyObject *hook)
{
    if (hook != Py_None && !PyCallable_Check(hook)) {
        PyErr_SetString(PyExc_TypeError, "_inject_before_copy(callable or None)");
        return NULL;
    }
    Py_XSETREF(copy_hook, hook == Py_None ? NULL : Py_NewRef(hook));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_inject_before_copy", inject_before_copy, METH_O,
     "tests only: call hook() inside read_copy between finding a record and copying it"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "pyshm._ring_fast",
    "The ring's hot calls (publish, read, read_copy, read_into, the waits) in C.", -1,
    module_methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__ring_fast(void)
{
    PyObject *errors = PyImport_ImportModule("pyshm.errors");
    if (!errors) return NULL;
    InvalidParameterError = PyObject_GetAttrString(errors, "InvalidParameterError");
    ConcurrentUseError = PyObject_GetAttrString(errors, "ConcurrentUseError");
    ClosedError = PyObject_GetAttrString(errors, "ClosedError");
    Py_DECREF(errors);
    if (!InvalidParameterError || !ConcurrentUseError || !ClosedError) return NULL;
    if (!(s_spin = intern("spin")) || !(s_yield = intern("yield")) ||
        !(s_sleep = intern("sleep")) || !(s_block = intern("block")) ||
        !(s_timeout = intern("timeout")) || !(s_wait = intern("wait")) ||
        !(s_type = intern("type")))
        return NULL;
    PyObject *s_data = intern("data"), *s_buffer = intern("buffer");
    if (!s_data || !s_buffer) return NULL;
    names_read[0] = s_timeout;
    names_read[1] = s_wait;
    names_read_into[0] = s_buffer;
    names_read_into[1] = s_timeout;
    names_read_into[2] = s_wait;
    names_wait[0] = s_timeout;
    names_wait[1] = s_wait;
    names_wait[2] = s_data; /* unused third slot keeps the table shape */
    names_publish[0] = s_data;
    names_publish[1] = s_type;
    names_publish[2] = s_timeout;
    if (PyType_Ready(&ReaderType) < 0 || PyType_Ready(&WriterType) < 0 ||
        PyType_Ready(&MessageType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (!m) return NULL;
    Py_INCREF(&ReaderType);
    Py_INCREF(&WriterType);
    Py_INCREF(&MessageType);
    if (PyModule_AddObject(m, "Reader", (PyObject *)&ReaderType) < 0 ||
        PyModule_AddObject(m, "Writer", (PyObject *)&WriterType) < 0 ||
        PyModule_AddObject(m, "Message", (PyObject *)&MessageType) < 0 ||
        PyModule_AddIntConstant(m, "FULL", PYSHM_FULL) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_SPIN", PYSHM_WAIT_SPIN) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_YIELD", PYSHM_WAIT_YIELD) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_SLEEP", PYSHM_WAIT_SLEEP) < 0 ||
        PyModule_AddIntConstant(m, "WAIT_BLOCK", PYSHM_WAIT_BLOCK) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
