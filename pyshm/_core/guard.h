/*
 * pyshm mapping guard (guard.c): a SIGBUS inside a registered pyshm mapping (its file
 * was truncated) replaces the mapping with poisoned private pages instead of killing
 * the process; pyshm_guard_faulted() then tells the Python layer to raise.
 */
#ifndef PYSHM_GUARD_H
#define PYSHM_GUARD_H

#include <stdint.h>

/* 1 installed now, 0 already installed, -1 error */
int pyshm_guard_install(void);
/* ring: the mapping starts with a ring header. Returns a handle, or -1 (not guarded). */
int pyshm_guard_register(uintptr_t start, uint64_t len, int prot, int ring);
int pyshm_guard_faulted(int handle);
void pyshm_guard_unregister(int handle);
uint64_t pyshm_guard_faults(void);

#endif /* PYSHM_GUARD_H */
