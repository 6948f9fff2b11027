"""The C CRC32C (pyshm.checksum) against the `crc32c` package: random data, every
alignment and length around the three-stream loop's boundaries and the far lanes of large
buffers, the portable and the SSE4.2 paths, combination, folding, the fused copy and the
fused copy of block runs."""

from __future__ import annotations

import random

import crc32c as ref
import numpy as np
import pytest
from pyshm._ring_c import lib  # type: ignore[import-not-found]

from pyshm import checksum

# the loops' boundaries: 8-byte words, 16-byte vectors, 3 x 256 and 3 x 8192 lanes, and
# the far lanes of large buffers (3 x 256 KiB to read, 4 x 256 KiB to copy streaming),
# with remainders that are not whole cache lines
FAR = 256 << 10
LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 767, 768, 769, 1000, 3 * 8192 - 1,
           3 * 8192, 3 * 8192 + 1, 3 * 8192 + 3 * 256 + 24 + 5, 100_003, 3 * FAR - 1,
           3 * FAR, 3 * FAR + 200 + 3, 4 * FAR - 1, 1 << 20, 4 * FAR + 3 * 64 + 7,
           (3 << 20) + 12_345]
RAW = (3 << 20) + 12_345 + 64


@pytest.fixture(params=["hardware", "portable"])
def path(request):
    if request.param == "hardware" and not checksum.hardware():
        pytest.fail("this machine has no SSE4.2: the hardware path cannot be tested here")
    lib.pyshm_crc32c_force_portable(int(request.param == "portable"))
    yield request.param
    lib.pyshm_crc32c_force_portable(0)


def test_check_value(path):
    assert checksum.crc32c(b"123456789") == 0xE3069283 == ref.crc32c(b"123456789")


def test_random_data_every_length_and_alignment(path):
    rng = np.random.default_rng(1)
    raw = rng.integers(0, 256, RAW, dtype=np.uint8).tobytes()
    for n in LENGTHS:
        for align in (0, 1, 3, 8, 13):
            data = raw[align:align + n]
            assert checksum.crc32c(data) == ref.crc32c(data), (n, align)
            seed = 0x12345678
            assert checksum.crc32c(data, seed) == ref.crc32c(data, seed), (n, align)


def test_fused_copy_writes_and_checksums(path):
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, RAW, dtype=np.uint8)
    for n in LENGTHS:
        for s_al, d_al in ((0, 0), (8, 0), (0, 8), (3, 5), (16, 16)):
            for nt in (False, True):
                dst = np.zeros(n + 32, dtype=np.uint8)
                s = src[s_al:s_al + n]
                crc = checksum.copy_crc32c(dst[d_al:d_al + n], s, 7, nontemporal=nt)
                assert crc == ref.crc32c(s.tobytes(), 7), (n, s_al, d_al, nt)
                assert bytes(dst[d_al:d_al + n]) == s.tobytes()
                assert not dst[:d_al].any() and not dst[d_al + n:].any()


@pytest.mark.parametrize("nt", [False, True])
def test_fused_copy_of_block_runs(path, nt):
    """Each block's CRC as written, for runs shorter and longer than the four far lanes
    (count not a multiple of 4), blocks that are not whole cache lines, and an
    unaligned destination (the streaming lanes need 16-byte alignment)."""
    rng = np.random.default_rng(5)
    src = rng.integers(0, 256, (2 << 20) + 64, dtype=np.uint8)
    for block, count, d_al in ((65536, 1, 0), (65536, 3, 0), (65536, 4, 0), (65536, 23, 0),
                               (4096, 37, 0), (4096, 9, 8), (1000, 11, 0), (64, 4, 0)):
        n = block * count
        dst = np.zeros(n + 32, dtype=np.uint8)
        crcs = checksum.copy_blocks_crc32c(dst[d_al:d_al + n], src[3:3 + n], block,
                                           nontemporal=nt)
        want = [ref.crc32c(src[3 + i * block:3 + (i + 1) * block].tobytes())
                for i in range(count)]
        assert list(crcs) == want, (block, count, d_al)
        assert bytes(dst[d_al:d_al + n]) == src[3:3 + n].tobytes()
        assert not dst[:d_al].any() and not dst[d_al + n:].any()
    with pytest.raises(ValueError, match="whole number"):
        checksum.copy_blocks_crc32c(bytearray(100), bytes(100), 64)


def test_combine_equals_concatenation():
    rng = random.Random(3)
    for _ in range(300):
        a = rng.randbytes(rng.randrange(0, 300))
        b = rng.randbytes(rng.choice([0, 1, 8, rng.randrange(0, 5000)]))
        assert checksum.crc32c_combine(ref.crc32c(a), ref.crc32c(b), len(b)) == \
            ref.crc32c(a + b)
    # lengths far beyond any buffer: x^(8n) by squaring, checked against zero runs
    zeros = bytes(1 << 20)
    z = ref.crc32c(zeros)
    assert checksum.crc32c_combine(ref.crc32c(b"x"), z, len(zeros)) == ref.crc32c(b"x" + zeros)
    big = checksum.crc32c_combine(z, z, 1 << 20)
    assert big == ref.crc32c(zeros + zeros)


def test_fold_equals_the_blocks_concatenated():
    rng = np.random.default_rng(4)
    for block in (8, 64, 4096, 65536):
        data = rng.integers(0, 256, block * 37, dtype=np.uint8).tobytes()
        crcs = np.array([ref.crc32c(data[i:i + block]) for i in range(0, len(data), block)],
                        dtype=np.uint32)
        assert checksum.crc32c_fold(0, crcs, block) == ref.crc32c(data)
        head = b"head bytes"
        assert checksum.crc32c_fold(ref.crc32c(head), crcs[5:], block) == \
            ref.crc32c(head + data[5 * block:])
        assert checksum.crc32c_fold(123, crcs[:0], block) == 123


def test_bad_arguments():
    with pytest.raises(ValueError, match="destination has 3 bytes"):
        checksum.copy_crc32c(bytearray(3), b"four")
    with pytest.raises(ValueError):
        checksum.crc32c_combine(0, 0, -1)
    with pytest.raises(ValueError):
        checksum.crc32c_fold(0, np.zeros(2, np.uint32), 0)
