/*
 * CRC32C: see crc32c.h. Arithmetic is in the reflected representation of the CRC
 * register (bit 31 is the coefficient of x^0), so that "multiply by x^k modulo P" is the
 * effect of feeding k zero bits, which is what combining and the three-stream loop need.
 */
#include "crc32c.h"

#include <string.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define PYSHM_CRC_X86 1
#endif

#if __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the portable path reads little-endian words (as the ring layout does)"
#endif

#define POLY 0x82F63B78u

/* the three-stream loops: lane lengths, in bytes (multiples of 8) */
#define LONG_LANE 8192u
#define SHORT_LANE 256u

/*
 * Large buffers are cut into lanes far apart (a third, or for copies a quarter, of the
 * buffer each), read at once with a software prefetch ahead in every lane. One core
 * reading from memory is bound by how many cache-line misses it has in flight, not by
 * the crc32 instruction: lanes 8 KiB apart keep the hardware prefetcher on neighbouring
 * pages, while lanes at least 256 KiB apart, each prefetched 1-2 KiB ahead, read a
 * 256 MiB buffer about 1.5x faster (measured on this project's 2-vCPU VM: a CRC pass
 * 0.61x -> 0.46x of a memcpy of the same size; the fused streaming copy 0.8x -> 0.7x).
 * The lanes' CRCs are joined by multiplication with x^(8 lane) mod P.
 */
#define FAR_LANE_MIN (256u << 10)
#define READ_AHEAD 2048u
#define COPY_AHEAD 1024u

static uint32_t x2n_table[32];          /* x^(2^k) mod P */
static uint32_t slice8[8][256];         /* portable slicing-by-8 */
static uint32_t shift_long[4][256];     /* multiply by x^(8 LONG_LANE), bytewise */
static uint32_t shift_short[4][256];    /* multiply by x^(8 SHORT_LANE), bytewise */
static int hw_detected, use_hw;

uint32_t pyshm_crc32c_mult(uint32_t a, uint32_t b)
{
    /* a * b mod P: for each coefficient of a (x^0 first), add b, and b *= x */
    uint32_t p = 0;
    for (int i = 0; i < 32; i++) {
        if (a & (0x80000000u >> i)) p ^= b;
        b = (b & 1) ? (b >> 1) ^ POLY : b >> 1;
    }
    return p;
}

uint32_t pyshm_crc32c_x8n(uint64_t len)
{
    /* x^(8 len) = product of x^(2^k) over the bits k of 8 len; the order of x divides
     * 2^32 - 1, so x^(2^k) repeats every 32 values of k */
    uint32_t p = 0x80000000u; /* x^0 */
    unsigned k = 3;
    while (len) {
        if (len & 1) p = pyshm_crc32c_mult(x2n_table[k & 31], p);
        len >>= 1;
        k++;
    }
    return p;
}

uint32_t pyshm_crc32c_combine(uint32_t crc_a, uint32_t crc_b, uint64_t len_b)
{
    /* the pre- and post-inversions of the two CRCs cancel: crc(A||B) is crc(A) moved
     * past len_b zero bytes, plus crc(B) */
    return pyshm_crc32c_mult(pyshm_crc32c_x8n(len_b), crc_a) ^ crc_b;
}

uint32_t pyshm_crc32c_fold(uint32_t crc, const uint32_t *block_crcs, uint64_t count,
                           uint64_t block_len)
{
    uint32_t x = pyshm_crc32c_x8n(block_len);
    for (uint64_t i = 0; i < count; i++) crc = pyshm_crc32c_mult(x, crc) ^ block_crcs[i];
    return crc;
}

static void fill_shift(uint32_t tab[4][256], uint64_t len)
{
    uint32_t x = pyshm_crc32c_x8n(len);
    for (int k = 0; k < 4; k++)
        for (uint32_t b = 0; b < 256; b++) tab[k][b] = pyshm_crc32c_mult(x, b << (8 * k));
}

static inline uint32_t shift(const uint32_t tab[4][256], uint32_t s)
{
    return tab[0][s & 0xff] ^ tab[1][(s >> 8) & 0xff] ^ tab[2][(s >> 16) & 0xff] ^
           tab[3][s >> 24];
}

__attribute__((constructor)) static void crc32c_init(void)
{
    uint32_t p = 0x40000000u; /* x^1 */
    x2n_table[0] = p;
    for (int n = 1; n < 32; n++) x2n_table[n] = p = pyshm_crc32c_mult(p, p);
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? (c >> 1) ^ POLY : c >> 1;
        slice8[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int k = 1; k < 8; k++)
            slice8[k][i] = (slice8[k - 1][i] >> 8) ^ slice8[0][slice8[k - 1][i] & 0xff];
    fill_shift(shift_long, LONG_LANE);
    fill_shift(shift_short, SHORT_LANE);
#ifdef PYSHM_CRC_X86
    __builtin_cpu_init();
    hw_detected = __builtin_cpu_supports("sse4.2") != 0;
#endif
    use_hw = hw_detected;
}

int pyshm_crc32c_hardware(void) { return use_hw; }

void pyshm_crc32c_force_portable(int on) { use_hw = on ? 0 : hw_detected; }

static inline uint64_t load64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

static inline void store64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* ---- portable: slicing-by-8 on the register (little-endian words) ---------------- */

static uint32_t sw_update(uint32_t s, const uint8_t *p, uint64_t n)
{
    while (n && ((uintptr_t)p & 7)) {
        s = (s >> 8) ^ slice8[0][(s ^ *p++) & 0xff];
        n--;
    }
    while (n >= 8) {
        uint64_t w = load64(p) ^ s;
        s = slice8[7][w & 0xff] ^ slice8[6][(w >> 8) & 0xff] ^ slice8[5][(w >> 16) & 0xff] ^
            slice8[4][(w >> 24) & 0xff] ^ slice8[3][(w >> 32) & 0xff] ^
            slice8[2][(w >> 40) & 0xff] ^ slice8[1][(w >> 48) & 0xff] ^ slice8[0][w >> 56];
        p += 8;
        n -= 8;
    }
    while (n--) s = (s >> 8) ^ slice8[0][(s ^ *p++) & 0xff];
    return s;
}

/* copy in L1-sized pieces and checksum each piece from the destination just written
 * (only this thread writes it, so those are the bytes stored) */
static uint32_t sw_copy(uint32_t s, uint8_t *dst, const uint8_t *src, uint64_t n)
{
    while (n) {
        uint64_t k = n < 4096 ? n : 4096;
        memcpy(dst, src, k);
        s = sw_update(s, dst, k);
        dst += k;
        src += k;
        n -= k;
    }
    return s;
}

/* ---- SSE4.2: three independent CRC streams over three lanes, then combined -------- */

#ifdef PYSHM_CRC_X86
/* prefetch an address computed as an integer: a lane's look-ahead may point past the
 * buffer (a prefetch never faults), which pointer arithmetic may not */
#define PREFETCH(base, off) \
    _mm_prefetch((const char *)(uintptr_t)((uintptr_t)(base) + (off)), _MM_HINT_T0)

/* three lanes of `len` bytes (a multiple of 64) at p0, p1, p2, one cache line of each in
 * turn, continuing the raw registers c[0..2] */
__attribute__((target("sse4.2"))) static void hw_read3(uint64_t c[3], const uint8_t *p0,
                                                       const uint8_t *p1, const uint8_t *p2,
                                                       uint64_t len)
{
    uint64_t c0 = c[0], c1 = c[1], c2 = c[2];
    for (uint64_t i = 0; i < len; i += 64) {
        PREFETCH(p0, i + READ_AHEAD);
        PREFETCH(p1, i + READ_AHEAD);
        PREFETCH(p2, i + READ_AHEAD);
        for (unsigned j = 0; j < 64; j += 8) {
            c0 = _mm_crc32_u64(c0, load64(p0 + i + j));
            c1 = _mm_crc32_u64(c1, load64(p1 + i + j));
            c2 = _mm_crc32_u64(c2, load64(p2 + i + j));
        }
    }
    c[0] = c0;
    c[1] = c1;
    c[2] = c2;
}

__attribute__((target("sse4.2"))) static uint32_t hw_update(uint32_t s, const uint8_t *p,
                                                            uint64_t n)
{
    uint64_t c0 = s;
    while (n && ((uintptr_t)p & 7)) {
        c0 = _mm_crc32_u8((uint32_t)c0, *p++);
        n--;
    }
    if (n >= 3 * (uint64_t)FAR_LANE_MIN) {
        uint64_t lane = (n / 3) & ~(uint64_t)63;
        uint64_t c[3] = {c0, 0, 0};
        hw_read3(c, p, p + lane, p + 2 * lane, lane);
        uint32_t x = pyshm_crc32c_x8n(lane);
        c0 = pyshm_crc32c_mult(x, (uint32_t)c[0]) ^ (uint32_t)c[1];
        c0 = pyshm_crc32c_mult(x, (uint32_t)c0) ^ (uint32_t)c[2];
        p += 3 * lane;
        n -= 3 * lane;
    }
    while (n >= 3 * LONG_LANE) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + LONG_LANE;
        do {
            c0 = _mm_crc32_u64(c0, load64(p));
            c1 = _mm_crc32_u64(c1, load64(p + LONG_LANE));
            c2 = _mm_crc32_u64(c2, load64(p + 2 * LONG_LANE));
            p += 8;
        } while (p < end);
        c0 = shift(shift_long, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(shift_long, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * LONG_LANE;
        n -= 3 * LONG_LANE;
    }
    while (n >= 3 * SHORT_LANE) {
        uint64_t c1 = 0, c2 = 0;
        const uint8_t *end = p + SHORT_LANE;
        do {
            c0 = _mm_crc32_u64(c0, load64(p));
            c1 = _mm_crc32_u64(c1, load64(p + SHORT_LANE));
            c2 = _mm_crc32_u64(c2, load64(p + 2 * SHORT_LANE));
            p += 8;
        } while (p < end);
        c0 = shift(shift_short, (uint32_t)c0) ^ (uint32_t)c1;
        c0 = shift(shift_short, (uint32_t)c0) ^ (uint32_t)c2;
        p += 2 * SHORT_LANE;
        n -= 3 * SHORT_LANE;
    }
    while (n >= 8) {
        c0 = _mm_crc32_u64(c0, load64(p));
        p += 8;
        n -= 8;
    }
    while (n--) c0 = _mm_crc32_u8((uint32_t)c0, *p++);
    return (uint32_t)c0;
}

/* 16 bytes of a lane: one vector load, stored from that register and checksummed from
 * it (both halves moved to general registers), so the CRC is of exactly the bytes
 * stored even when the source changes meanwhile. Vector rather than 8-byte moves: the
 * streaming 16-byte store keeps the loop at memcpy speed on large copies (measured:
 * 8-byte movnti ~0.87x memcpy, this ~0.96x, at 256 MiB). */
#define LANE16(c, off)                                                                   \
    do {                                                                                 \
        __m128i v_ = _mm_loadu_si128((const __m128i *)(const void *)(src + (off)));      \
        if (nt)                                                                          \
            _mm_stream_si128((__m128i *)(void *)(dst + (off)), v_);                      \
        else                                                                             \
            _mm_storeu_si128((__m128i *)(void *)(dst + (off)), v_);                      \
        c = _mm_crc32_u64(c, (uint64_t)_mm_cvtsi128_si64(v_));                           \
        c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(v_, 1));                        \
    } while (0)

/* a whole cache line of one lane at a time: each streaming store fills its line's
 * write-combining buffer before the next lane's line begins */
#define LINE64(c, off)                                                                   \
    do {                                                                                 \
        LANE16(c, (off));                                                                \
        LANE16(c, (off) + 16);                                                           \
        LANE16(c, (off) + 32);                                                           \
        LANE16(c, (off) + 48);                                                           \
    } while (0)

#define LANES(lane, table)                                                               \
    while (n >= 3 * (lane)) {                                                            \
        uint64_t c1 = 0, c2 = 0;                                                         \
        for (uint64_t i = 0; i < (lane); i += 64) {                                      \
            LINE64(c0, i);                                                               \
            LINE64(c1, i + (lane));                                                      \
            LINE64(c2, i + 2 * (lane));                                                  \
        }                                                                                \
        c0 = shift(table, (uint32_t)c0) ^ (uint32_t)c1;                                  \
        c0 = shift(table, (uint32_t)c0) ^ (uint32_t)c2;                                  \
        src += 3 * (lane);                                                               \
        dst += 3 * (lane);                                                               \
        n -= 3 * (lane);                                                                 \
    }

__attribute__((target("sse4.2"))) static uint32_t hw_copy_lanes(uint64_t c0, uint8_t *dst,
                                                                const uint8_t *src,
                                                                uint64_t n, int nt)
{
    LANES(LONG_LANE, shift_long)
    LANES(SHORT_LANE, shift_short)
    while (n >= 16) {
        LANE16(c0, 0);
        src += 16;
        dst += 16;
        n -= 16;
    }
    while (n--) {
        uint8_t b = *src++;
        c0 = _mm_crc32_u8((uint32_t)c0, b);
        *dst++ = b;
    }
    return (uint32_t)c0;
}

/* one cache line, streamed: stored from the register it is checksummed from */
__attribute__((target("sse4.2"), always_inline)) static inline uint64_t
line_nt(uint64_t c, uint8_t *dst, const uint8_t *src)
{
    for (unsigned k = 0; k < 64; k += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(src + k));
        _mm_stream_si128((__m128i *)(void *)(dst + k), v);
        c = _mm_crc32_u64(c, (uint64_t)_mm_cvtsi128_si64(v));
        c = _mm_crc32_u64(c, (uint64_t)_mm_extract_epi64(v, 1));
    }
    return c;
}

/* four lanes of `len` bytes (a multiple of 64) copied with streaming stores (every d[k]
 * 16-byte aligned), one cache line of each in turn, continuing the raw registers c */
__attribute__((target("sse4.2"))) static void hw_copy4(uint64_t c[4], uint8_t *const d[4],
                                                       const uint8_t *const s[4],
                                                       uint64_t len)
{
    uint64_t c0 = c[0], c1 = c[1], c2 = c[2], c3 = c[3];
    for (uint64_t i = 0; i < len; i += 64) {
        PREFETCH(s[0], i + COPY_AHEAD);
        PREFETCH(s[1], i + COPY_AHEAD);
        PREFETCH(s[2], i + COPY_AHEAD);
        PREFETCH(s[3], i + COPY_AHEAD);
        c0 = line_nt(c0, d[0] + i, s[0] + i);
        c1 = line_nt(c1, d[1] + i, s[1] + i);
        c2 = line_nt(c2, d[2] + i, s[2] + i);
        c3 = line_nt(c3, d[3] + i, s[3] + i);
    }
    c[0] = c0;
    c[1] = c1;
    c[2] = c2;
    c[3] = c3;
}

__attribute__((target("sse4.2"))) static uint32_t hw_copy(uint32_t s, uint8_t *dst,
                                                          const uint8_t *src, uint64_t n,
                                                          int nt)
{
    uint64_t c0 = s;
    /* streaming stores need a 16-byte aligned destination */
    while (n && ((uintptr_t)dst & 15)) {
        uint8_t b = *src++;
        c0 = _mm_crc32_u8((uint32_t)c0, b);
        *dst++ = b;
        n--;
    }
    if (nt && n >= 4 * (uint64_t)FAR_LANE_MIN) {
        uint64_t lane = (n / 4) & ~(uint64_t)63;
        uint64_t c[4] = {c0, 0, 0, 0};
        uint8_t *const d[4] = {dst, dst + lane, dst + 2 * lane, dst + 3 * lane};
        const uint8_t *const sp[4] = {src, src + lane, src + 2 * lane, src + 3 * lane};
        hw_copy4(c, d, sp, lane);
        uint32_t x = pyshm_crc32c_x8n(lane);
        c0 = c[0];
        for (int k = 1; k < 4; k++) c0 = pyshm_crc32c_mult(x, (uint32_t)c0) ^ (uint32_t)c[k];
        dst += 4 * lane;
        src += 4 * lane;
        n -= 4 * lane;
    }
    /* two copies of the loop, so the store kind is not decided per word */
    return nt ? hw_copy_lanes(c0, dst, src, n, 1) : hw_copy_lanes(c0, dst, src, n, 0);
}
#endif

uint32_t pyshm_crc32c(uint32_t crc, const void *buf, uint64_t len)
{
    const uint8_t *p = buf;
#ifdef PYSHM_CRC_X86
    if (use_hw) return ~hw_update(~crc, p, len);
#endif
    return ~sw_update(~crc, p, len);
}

uint32_t pyshm_crc32c_copy(uint32_t crc, void *dst, const void *src, uint64_t len,
                           int nontemporal)
{
#ifdef PYSHM_CRC_X86
    if (use_hw) return ~hw_copy(~crc, dst, src, len, nontemporal);
#endif
    (void)nontemporal;
    return ~sw_copy(~crc, dst, src, len);
}

void pyshm_crc32c_copy_blocks(uint32_t *crcs, void *dst, const void *src, uint64_t count,
                              uint64_t block_len, int nontemporal)
{
    uint8_t *d = dst;
    const uint8_t *s = src;
    uint64_t i = 0;
#ifdef PYSHM_CRC_X86
    if (use_hw && nontemporal && count >= 4 && block_len && !(block_len & 63) &&
        !((uintptr_t)d & 15)) {
        /* four blocks a quarter of the run apart at a time: far lanes, and each lane's
         * CRC is its block's own, so nothing to combine */
        uint64_t q = count / 4;
        for (uint64_t j = 0; j < q; j++) {
            uint64_t c[4] = {~0u, ~0u, ~0u, ~0u};
            uint8_t *const dl[4] = {d + j * block_len, d + (j + q) * block_len,
                                    d + (j + 2 * q) * block_len, d + (j + 3 * q) * block_len};
            const uint8_t *const sl[4] = {s + j * block_len, s + (j + q) * block_len,
                                          s + (j + 2 * q) * block_len,
                                          s + (j + 3 * q) * block_len};
            hw_copy4(c, dl, sl, block_len);
            for (int k = 0; k < 4; k++) crcs[j + (uint64_t)k * q] = ~(uint32_t)c[k];
        }
        i = 4 * q;
    }
#endif
    for (; i < count; i++)
        crcs[i] = pyshm_crc32c_copy(0, d + i * block_len, s + i * block_len, block_len,
                                    nontemporal);
}

void pyshm_crc32c_store_fence(void)
{
#ifdef PYSHM_CRC_X86
    _mm_sfence();
#else
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
#endif
}
