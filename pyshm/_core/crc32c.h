/*
 * CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum of images and of a
 * replica's CRC table, in the convention of the `crc32c` package and of iSCSI/ext4:
 * pyshm_crc32c(0, "123456789", 9) == 0xE3069283, and pyshm_crc32c(pyshm_crc32c(0, a), b)
 * is the CRC of a followed by b.
 *
 * The x86-64 SSE4.2 `crc32` instruction is used when the CPU has it (checked once, at
 * load), three independent streams at a time so that its 3-cycle latency is hidden;
 * otherwise a portable slicing-by-8 table. Both give identical results (tested).
 *
 * pyshm_crc32c_copy is the fused loop of the CPU engine: every 8-byte word is loaded
 * once into a register, fed to the CRC and stored from that same register, so the CRC
 * is always the CRC of the bytes written, even if the source changes meanwhile.
 *
 * pyshm_crc32c_combine(crc(A), crc(B), len(B)) == crc(A || B) without reading A or B:
 * multiplication by x^(8 len B) modulo the polynomial, O(log len) multiplications.
 */
#ifndef PYSHM_CRC32C_H
#define PYSHM_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/* CRC of buf[0..len) continuing from crc (0 for a fresh CRC) */
uint32_t pyshm_crc32c(uint32_t crc, const void *buf, uint64_t len);

/* memcpy(dst, src, len) and the CRC of the bytes written, in one pass. nontemporal: use
 * streaming stores (large copies that should not evict the cache); the caller issues
 * pyshm_crc32c_store_fence() before publishing what was written that way. */
uint32_t pyshm_crc32c_copy(uint32_t crc, void *dst, const void *src, uint64_t len,
                           int nontemporal);
void pyshm_crc32c_store_fence(void);

/* count consecutive blocks of block_len bytes copied from src to dst, crcs[i] the CRC
 * (from 0) of block i as written; the same as count calls of pyshm_crc32c_copy, but
 * several blocks far apart are copied at once (faster from memory: crc32c.c) */
void pyshm_crc32c_copy_blocks(uint32_t *crcs, void *dst, const void *src, uint64_t count,
                              uint64_t block_len, int nontemporal);

/* crc(A || B) from crc(A), crc(B) and len(B) */
uint32_t pyshm_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b);

/* The operator of pyshm_crc32c_combine for a fixed len_b, to apply many times:
 * combine(a, b, len) == pyshm_crc32c_mult(pyshm_crc32c_x8n(len), a) ^ b. */
uint32_t pyshm_crc32c_x8n(uint64_t len);
uint32_t pyshm_crc32c_mult(uint32_t a, uint32_t b);

/* crc followed by count blocks of block_len bytes each, given their CRCs: the CRC of a
 * region from its blocks' CRCs without reading it (snapshots of a replica) */
uint32_t pyshm_crc32c_fold(uint32_t crc, const uint32_t *block_crcs, uint64_t count,
                           uint64_t block_len);

/* 1 when the SSE4.2 instruction is used, 0 for the portable table */
int pyshm_crc32c_hardware(void);
/* tests: force the portable implementation (1) or restore the detected one (0) */
void pyshm_crc32c_force_portable(int on);

#endif /* PYSHM_CRC32C_H */
