"""The block cache's checksum: a sum of position-keyed, mixed 64-bit words.

Each word ``w`` (a uint64 or uint32 element of the raw data) at position ``j`` adds
``mix(w + (j + 1)·φ)`` to a 64-bit sum, where ``mix`` is splitmix64's finaliser (a bijection)
and ``φ`` the golden-ratio constant. Why this and not ``zlib.crc32`` (about 1 GB/s) or a
plain (Fletcher-style) sum:

- a change of any single word (a bit flip) changes its mixed value, so the sum changes;
- flipping the sign bit of an even number of values leaves a plain or position-weighted
  sum unchanged (the changes are multiples of 2^63); mixed values change pseudo-randomly,
  so such changes cancel with probability about 2^-64;
- the sum is additive over positions, so a writer can checksum a chunk from pieces of any
  size (``first`` gives the position of the piece's first word), and it vectorises: measured
  here at 28 GB/s on one thread, the speed of a plain sum of the same words.
"""

from __future__ import annotations

import numpy as np

from ._config import kernel

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
MIX_1 = np.uint64(0xBF58476D1CE4E5B9)
MIX_2 = np.uint64(0x94D049BB133111EB)


@kernel
def mixed_sum(words, first):
    """Σ mix(words[j] + (first + j + 1)·φ) mod 2^64 (``words``: uint64 or uint32)."""
    total = np.uint64(0)
    key = np.uint64(first + 1) * GOLDEN
    for j in range(words.shape[0]):
        x = np.uint64(words[j]) + key
        key += GOLDEN
        x ^= x >> np.uint64(30)
        x *= MIX_1
        x ^= x >> np.uint64(27)
        x *= MIX_2
        x ^= x >> np.uint64(31)
        total += x
    return total
