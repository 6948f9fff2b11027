"""The C CRC32C (pyshm.checksum) against the `crc32c` package: random data, every
alignment and length around the three-stream loop's boundaries, the portable and the
SSE4.2 paths, combination, folding and the fused copy."""

from __future__ import annotations

import random

import crc32c as ref
import numpy as np
import pytest
from pyshm._ring_c import lib  # type: ignore[import-not-found]

from pyshm import checksum

# the loops' boundaries: 8-byte words, 16-byte vectors, 3 x 256 and 3 x 8192 lanes
LENGTHS = [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 767, 768, 769, 1000, 3 * 8192 - 1,
           3 * 8192, 3 * 8192 + 1, 3 * 8192 + 3 * 256 + 24 + 5, 100_003, 1 << 20]


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
    raw = rng.integers(0, 256, (1 << 20) + 64, dtype=np.uint8).tobytes()
    for n in LENGTHS:
        for align in (0, 1, 3, 8, 13):
            data = raw[align:align + n]
            assert checksum.crc32c(data) == ref.crc32c(data), (n, align)
            seed = 0x12345678
            assert checksum.crc32c(data, seed) == ref.crc32c(data, seed), (n, align)


def test_fused_copy_writes_and_checksums(path):
    rng = np.random.default_rng(2)
    src = rng.integers(0, 256, (1 << 20) + 64, dtype=np.uint8)
    for n in LENGTHS:
        for s_al, d_al in ((0, 0), (8, 0), (0, 8), (3, 5), (16, 16)):
            for nt in (False, True):
                dst = np.zeros(n + 32, dtype=np.uint8)
                s = src[s_al:s_al + n]
                crc = checksum.copy_crc32c(dst[d_al:d_al + n], s, 7, nontemporal=nt)
                assert crc == ref.crc32c(s.tobytes(), 7), (n, s_al, d_al, nt)
                assert bytes(dst[d_al:d_al + n]) == s.tobytes()
                assert not dst[:d_al].any() and not dst[d_al + n:].any()


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
