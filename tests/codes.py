"""The blockwise moments' code maps and byte layout, in NumPy, independent of adam_optax.

The maps are rebuilt from Dettmers et al. (2021)'s description of the dynamic map, for 8
bits and for the 4 of Li, Chen & Zhu (2023); the layout of 4-bit codes (two per byte,
element 2j in the low half of byte j, 2j + 1 in the high half) is undone with shifts and
masks, as a reader of a checkpoint would.
"""

from __future__ import annotations

import numpy as np

BITS = [8, 4]  # the code widths every blockwise test runs for
# The blocks the tests use per code width: the library's defaults (bitsandbytes's 256,
# Li, Chen & Zhu's 128), each even, so that a 4-bit block holds whole bytes.
BLOCK = {8: 256, 4: 128}
# The largest gap of each map, at its top decade, relative to the block's absmax:
# 2^(b-1) equal steps over (0.1, 1], b = bits - 2 (signed, a sign bit) or bits - 1.
TOP_GAP = {(8, True): 0.9 / 64, (8, False): 0.9 / 128, (4, True): 0.9 / 4, (4, False): 0.9 / 8}


def dynamic_map(signed: bool, bits: int = 8) -> np.ndarray:
    """The sorted values of the dynamic map, from the paper's description, float64.

    After the sign (signed map only), e zero bits give the decade 10^-e, a one
    bit ends them, and the remaining bits are a linear fraction in (0.1, 1]:
    2^(b-e) values per decade, b = bits - 2 (signed) or bits - 1 (unsigned),
    plus zero, which the unsigned map (for v) replaces by 10^-(b+1), the
    bottom of the decade below its last (1e-8 with 8 bits, 1e-4 with 4: see
    adam_optax.storage). 2^bits - 1 values signed, 2^bits unsigned.
    """
    b = bits - 2 if signed else bits - 1
    values = {0.0 if signed else 10.0 ** -(b + 1)}
    for e in range(b + 1):
        fraction_bits = b - e
        low = 0.0 if e == b else 0.1
        for i in range(1, 2**fraction_bits + 1):
            values.add(10.0**-e * (low + (1 - low) * i / 2**fraction_bits))
    magnitudes = np.array(sorted(values))
    return np.concatenate([-magnitudes[:0:-1], magnitudes]) if signed else magnitudes


def code_values(signed: bool, bits: int) -> np.ndarray:
    """What each of the 2^bits codes stands for: the map, and for the signed map,
    which is one value short, its unused last code read as 1."""
    table = dynamic_map(signed, bits)
    return np.concatenate([table, [1.0]]) if signed else table


def unpack(codes: np.ndarray, bits: int) -> np.ndarray:
    """One code per element from the stored bytes: with 4 bits, byte j of the last axis
    holds element 2j in its low half and element 2j + 1 in its high half."""
    codes = np.asarray(codes)
    assert codes.dtype == np.uint8, codes.dtype
    if bits == 8:
        return codes
    out = np.empty((*codes.shape[:-1], 2 * codes.shape[-1]), np.uint8)
    out[..., 0::2] = codes & 0x0F
    out[..., 1::2] = codes >> 4
    return out
