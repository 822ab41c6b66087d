"""Integer-only range coder, bit-exact with the ``range-v1`` and ``range-v2`` payloads of `RangeCodec`.

`RangeCodec` uses constriction 0.5.0 (``stream.queue.RangeEncoder`` with the
``Categorical(perfect=False)`` model family). This module reproduces its output with
plain integer arithmetic so that it can be ported to a microcontroller in C.

Probability model (done once, ahead of time; the only place floats appear)
    Every float64 table of ``n`` entries becomes integer probabilities at PRECISION = 24
    bits that sum to exactly 2**24. Each symbol is first given one unit of mass, so that
    none ends up with zero probability; the remaining ``2**24 - n`` units are spread in
    proportion to the floats::

        total  = p[0] + p[1] + ... + p[n-1]        (float64, summed left to right)
        scale  = float64(2**24 - n) / total
        C[s]   = p[0] + ... + p[s-1]               (float64, summed left to right)
        cum[s] = trunc(C[s] * scale) + s           for s = 0 .. n-1
        cum[n] = 2**24                             (last symbol takes what is left)
        q[s]   = cum[s+1] - cum[s]

    The sums must be formed in exactly that order and the product rounded once, as
    IEEE float64 does: any other summation order can shift a boundary by one unit.

Encoder state (u32 words, u64 state)
    ``lower`` (u64, wrapping) and ``range`` (u64), initially 0 and 2**64 - 1. Invariant
    between symbols: ``range >= 2**32``. For a symbol with cumulative ``c`` and
    probability ``q``::

        step      = range >> 24
        new_lower = (lower + step * c) mod 2**64
        range     = step * q

    When ``range < 2**32`` the top word of ``lower`` leaves the state: ``lower <<= 32``
    (mod 2**64) and ``range <<= 32``. The word is normally written at once. A carry from
    a later addition can still reach it, though, whenever ``lower + range`` wraps past
    2**64 (the "inverted" situation). Then the word is held back and only a count of the
    held-back words is kept: the words after the first are all 0xFFFFFFFF and become
    0x00000000 if a carry arrives, which also increments the first one. The situation
    resolves at the first later symbol after which ``lower + range`` no longer wraps;
    a carry happened iff ``new_lower < lower`` (the addition wrapped).

Termination (what ``get_compressed()`` appends; nothing if no symbol was encoded)
    1. Flush any held-back words as above, with "carry" meaning that
       ``point = lower + (2**32 - 1)`` wrapped.
    2. Write ``point >> 32``, i.e. ``lower`` rounded up to a multiple of 2**32: a word
       whose continuations are all ``>= lower``.
    3. If ``((lower + range) mod 2**64) >> 32`` equals that word, some continuations
       would reach past the interval's end, so one extra zero word pins the point at
       ``word << 32`` (the decoder pads a short stream with zeros).

Words are little-endian u32 in the payload.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

PRECISION = 24
TOTAL = 1 << PRECISION
WORD_BITS = 32
STATE_BITS = 64
WORD_MASK = (1 << WORD_BITS) - 1
STATE_MASK = (1 << STATE_BITS) - 1
# `range` below this value has lost a whole word of resolution and must be renormalized.
RENORM_BELOW = 1 << (STATE_BITS - WORD_BITS)


def quantize_table(probabilities: np.ndarray) -> np.ndarray:
    """Fixed-point probabilities (uint32, summing to 2**24) of one float64 table."""
    p = [float(x) for x in np.asarray(probabilities, dtype=np.float64).reshape(-1)]
    n = len(p)
    if n < 2 or n >= TOTAL - 1:
        raise ValueError(f"a table needs between 2 and {TOTAL - 2} entries, got {n}")
    # Python floats are IEEE float64, and this loop keeps the left-to-right summation
    # order, so every rounding step matches the reference.
    total = 0.0
    for x in p:
        total += x
    if not (np.isfinite(total) and total > 0.0) or any(x < 0.0 for x in p):
        raise ValueError("probabilities must be nonnegative, finite and not all zero")
    scale = float(TOTAL - n) / total

    cum = [0] * (n + 1)
    running = 0.0
    for s in range(n):
        # int() truncates toward zero, as Rust's float-to-integer `as` does for these
        # nonnegative values; `+ s` is the one guaranteed unit per preceding symbol.
        cum[s] = int(running * scale) + s
        running += p[s]
    cum[n] = TOTAL
    q = np.diff(np.asarray(cum, dtype=np.int64))
    if np.any(q <= 0):  # cannot happen for valid input; guards a broken port
        raise ValueError("quantization produced a zero probability")
    return q.astype(np.uint32)


def quantize_tables(tables: np.ndarray) -> np.ndarray:
    """`quantize_table` applied to every row of a (tables, levels) array."""
    tables = np.asarray(tables, dtype=np.float64)
    return np.stack([quantize_table(row) for row in tables])


def _cumulatives(tables_q: np.ndarray) -> list[list[int]]:
    """Cumulative tables (length levels + 1, last entry 2**24), one per table."""
    tables_q = np.asarray(tables_q)
    if tables_q.ndim != 2:
        raise ValueError(f"tables_q must be (tables, levels), got shape {tables_q.shape}")
    cums = []
    for row in tables_q:
        cum = [0]
        for q in row:
            cum.append(cum[-1] + int(q))
        if cum[-1] != TOTAL or min(int(q) for q in row) <= 0:
            raise ValueError("every quantized table must be positive and sum to 2**24")
        cums.append(cum)
    return cums


def _table_of(symbols_count: int, tables: int, symbols_per_table: int) -> Iterator[int]:
    """The table of each symbol in coding order: `symbols_per_table` consecutive symbols share one (a
    channel's H*W in range-v1, a single symbol in range-v2)."""
    if symbols_count != tables * symbols_per_table:
        raise ValueError(
            f"{symbols_count} symbols, expected {tables} tables x {symbols_per_table}"
        )
    for t in range(tables):
        for _ in range(symbols_per_table):
            yield t


def encode(symbols: Sequence[int], tables_q: np.ndarray, symbols_per_table: int) -> bytes:
    """Range-code `symbols` (channel-major), each run of `symbols_per_table` with the next quantized table."""
    cums = _cumulatives(tables_q)
    levels = len(cums[0]) - 1
    flat = [int(s) for s in np.asarray(symbols).reshape(-1)]
    words: list[int] = []

    lower = 0
    rng = STATE_MASK
    # Held-back words of the inverted situation: how many, and the first one's value.
    inverted = 0
    first_inverted = 0

    def flush_inverted(carry: bool) -> None:
        if carry:
            words.append((first_inverted + 1) & WORD_MASK)
            words.extend([0] * (inverted - 1))
        else:
            words.append(first_inverted)
            words.extend([WORD_MASK] * (inverted - 1))

    for symbol, c in zip(flat, _table_of(len(flat), len(cums), symbols_per_table)):
        if not 0 <= symbol < levels:
            raise ValueError(f"symbol {symbol} outside [0, {levels})")
        cum = cums[c]
        step = rng >> PRECISION
        rng = step * (cum[symbol + 1] - cum[symbol])  # < 2**64: step * 2**24 <= old range
        new_lower = (lower + step * cum[symbol]) & STATE_MASK

        if inverted and ((new_lower + rng) & STATE_MASK) > new_lower:
            # The interval no longer straddles 2**64, so the held-back words are final.
            flush_inverted(carry=new_lower < lower)
            inverted = 0
        lower = new_lower

        if rng < RENORM_BELOW:
            rng <<= WORD_BITS  # cannot overflow: range < 2**32 here
            top = lower >> (STATE_BITS - WORD_BITS)
            lower = (lower << WORD_BITS) & STATE_MASK
            if inverted:
                inverted += 1  # implied 0xFFFFFFFF (or 0 after a carry)
            elif ((lower + rng) & STATE_MASK) > lower:
                words.append(top)
            else:
                inverted, first_inverted = 1, top

    if rng != STATE_MASK:  # nothing is appended to an encoder that saw no symbol
        point = (lower + (RENORM_BELOW - 1)) & STATE_MASK
        if inverted:
            flush_inverted(carry=point < lower)
        point_word = point >> (STATE_BITS - WORD_BITS)
        words.append(point_word)
        if ((lower + rng) & STATE_MASK) >> (STATE_BITS - WORD_BITS) == point_word:
            words.append(0)

    return np.asarray(words, dtype="<u4").tobytes()


def decode(payload: bytes, tables_q: np.ndarray, symbols_per_table: int) -> np.ndarray:
    """Inverse of `encode`: the channel-major symbols as an int64 array.

    Needs one u64-by-u64 division per symbol, to turn the point into a quantile.
    """
    if len(payload) % 4:
        raise ValueError("payload is not a whole number of 32-bit words")
    cums = _cumulatives(tables_q)
    words = [int(w) for w in np.frombuffer(payload, dtype="<u4")]
    pos = 0

    # The first two words form the point; missing words read as zero.
    point = 0
    for _ in range(STATE_BITS // WORD_BITS):
        point = (point << WORD_BITS) | (words[pos] if pos < len(words) else 0)
        pos += 1

    lower = 0
    rng = STATE_MASK
    out = []
    for c in _table_of(len(cums) * symbols_per_table, len(cums), symbols_per_table):
        cum = cums[c]
        step = rng >> PRECISION
        quantile = ((point - lower) & STATE_MASK) // step
        if quantile >= TOTAL:
            raise ValueError("payload does not decode: quantile out of range")
        # Largest symbol whose cumulative does not exceed the quantile (tables are tiny).
        symbol = 0
        while cum[symbol + 1] <= quantile:
            symbol += 1
        lower = (lower + step * cum[symbol]) & STATE_MASK
        rng = step * (cum[symbol + 1] - cum[symbol])
        if rng < RENORM_BELOW:
            lower = (lower << WORD_BITS) & STATE_MASK
            rng <<= WORD_BITS
            point = ((point << WORD_BITS) & STATE_MASK) | (words[pos] if pos < len(words) else 0)
            pos += 1
        out.append(symbol)
    return np.asarray(out, dtype=np.int64)
