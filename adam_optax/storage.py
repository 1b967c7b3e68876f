"""How a moment is stored and read back: the storage codec beside the Adam math.

The per-leaf Adam step (``transforms._adam_step``) is an elementwise function
of g and the moments; ``apply`` feeds it the stored moments and stores what it
returns, so the step never looks at the format. A moment is stored in one of
four ways, decided once at ``init``:

- **plain**: an array of the state dtype, written with round-to-nearest
  (``x.astype(dtype)``). The float32 default; nothing else happens.
- **16-bit with stochastic rounding**: a bfloat16 or float16 array, written by
  rounding each value up or down at random, with the probability that makes
  the rounding unbiased: E[SR(x)] = x (Gupta et al. 2015, "Deep Learning with
  Limited Numerical Precision"; Zamirai et al. 2020, "Revisiting BFloat16
  Training"). Round-to-nearest loses every update smaller than half a unit in
  the last place: with 8 significant bits, ``0.999 · v`` rounds back to ``v``.
- **8-bit blockwise** (Dettmers et al. 2021, "8-bit Optimizers via Block-wise
  Quantization"): a ``QuantizedArray`` of uint8 codes of the leaf's shape and
  one float32 scale per block of ``block_size`` consecutive elements along the
  last axis. A value x in a block with absmax s is stored as the code of the
  map value nearest to x / s (or, with stochastic rounding, of one of the two
  map values around it, unbiased in value), and read back as
  ``code_map(signed, bits)[code] · s``. s is the exact absmax of the block's
  finite values.
- **4-bit blockwise** (Li, Chen & Zhu 2023, "Memory Efficient Optimizers with
  4-bit States"): the same with 16 codes, two per byte along the last axis
  (element 2j in the low half of byte j); an odd row leaves its last byte half
  unused and has one zero scale more, which tells it from a row one longer.
  The codec computes the two halves of a byte apart (see ``_parts``).

The code maps are the "dynamic" maps of Dettmers et al., built from their
description: a magnitude in decade e (10^-(e+1), 10^-e] is e leading zero bits,
an indicator bit and a linear fraction in the remaining bits, so each decade
has half the steps of the one above it. With ``b`` bits for the exponent and
fraction (7 unsigned, for v >= 0; 6 signed, for m, plus a sign; 3 and 2 with
4-bit codes, which gives Li et al.'s dynamic-exponent maps), decade
e = 0..b-1 holds 2^(b-e) equally spaced values ending at 10^-e, and
[0, 10^-b] holds just 0 and 10^-b. Relative to the block's absmax, the
largest gap is 0.9/128 (unsigned) and 0.9/64 (signed), at the top decade;
values down to 1e-7 (unsigned) and 1e-6 (signed) are nonzero (4 bits: 0.9/8
and 0.9/4, down to 1e-3 and 1e-2). Here the codes
are the values' ranks (code 0 is the smallest value), so that encoding is
arithmetic: a few comparisons to find the decade, then one rounding.

One departure: the unsigned map (for v) has no zero. Its smallest code stands
for 1e-8 (4 bits: 1e-4) of the block's absmax (the map's 0 moved one decade
down), so a v too small to store reads back as that, not 0. With a 0, an element whose
|g| is below 2e-4 of its block's largest keeps a nonzero m but a zero v, and
its next zero-gradient step divides m by eps alone: an update 1e4 times too
large. Overstating a tiny v only shrinks that element's update.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_SIXTEEN_BIT = (jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))


def _magnitudes(bits: int, zero: bool = True) -> np.ndarray:
    """The dynamic map's magnitudes in [0, 1], ascending: 2^(bits+1) values.

    The first is 0, or 10^-(bits+1) without ``zero``.
    """
    values = [0.0 if zero else 10.0 ** -(bits + 1), 10.0**-bits]
    for e in reversed(range(bits)):
        n = 2 ** (bits - e)
        top, bottom = 10.0**-e, 10.0 ** -(e + 1)
        values += [bottom + (top - bottom) * i / n for i in range(1, n + 1)]
    return np.asarray(values)


BITS = (8, 4)  # the code widths a QuantizedArray may have


def _signed_magnitudes(bits: int) -> np.ndarray:
    """The signed map's magnitudes: 2^(bits-1) values, 0 first (a sign takes one bit)."""
    return _magnitudes(bits - 2)


def _map(signed: bool, bits: int) -> np.ndarray:
    """The 2^bits code values, ascending: code i stands for ``_map(signed, bits)[i]``."""
    if not signed:
        return _magnitudes(bits - 1, zero=False)
    magnitudes = _signed_magnitudes(bits)
    # -1 .. 1 is one value short of 2^bits; the last code repeats 1 so that every code decodes.
    return np.concatenate([-magnitudes[:0:-1], magnitudes, [1.0]])


def code_map(signed: bool, bits: int = 8) -> np.ndarray:
    """The 2^bits float32 values the codes stand for, code i -> ``code_map(signed, bits)[i]``.

    Ascending (the signed map's last entry repeats 1.0), with 1 exact, and 0
    exact in the signed map. The unsigned one has no 0: it starts at 1e-8
    (8 bits) or 1e-4 (4 bits).
    """
    return _map(signed, bits).astype(np.float32)


@dataclasses.dataclass(frozen=True, repr=False)
class QuantizedArray:
    """A float array stored as 8- or 4-bit codes and one float32 scale per block.

    Attributes:
        codes: uint8: code i stands for ``code_map(signed, bits)[i]``. With 8 bits,
            the array's shape; with 4, two codes per byte along the last axis
            (elements 2j and 2j + 1 in the low and high half of byte j), so the
            shape ``shape[:-1] + (ceil(shape[-1] / 2),)``.
        scales: float32, shape ``shape[:-1] + (ceil(shape[-1] / block),)``,
            where ``block = min(block_size, shape[-1])``: each block's absmax;
            with 4 bits and an odd last axis, one more per row, a zero.
        shape: the stored array's shape (static).
        signed: whether the signed map is used (static): True for m, False for v.
        block_size: the block length along the last axis (static).
        bits: the code width, 8 or 4 (static). Default: ``8``.

    A registered pytree node with codes and scales as children, so jit,
    donation, checkpointing and sharding treat it as two arrays. The 8-bit
    transforms (``adam8bit``, ``scale_by_adam8bit``) store a whole moment as a
    ``QuantizedTree`` and step each quantized leaf as one of these
    (``QuantizedTree.per_leaf``); ``dequantize`` reads either back. The
    format is Dettmers et al.'s blockwise dynamic quantization ("8-bit
    Optimizers via Block-wise Quantization", ICLR 2022), described in this
    module's docstring.

    Example:
        >>> import jax.numpy as jnp, adam_optax
        >>> tx = adam_optax.scale_by_adam8bit(block_size=4, min_quantized_size=0)
        >>> mu = tx.init({"w": jnp.ones((2, 6))}).mu.per_leaf()["w"]
        >>> print(type(mu).__name__, mu.shape, mu.codes.shape, mu.scales.shape, mu.signed)
        QuantizedArray (2, 6) (2, 6) (2, 2) True
    """

    codes: jax.Array
    scales: jax.Array
    shape: tuple[int, ...] = dataclasses.field(metadata={"static": True})
    signed: bool = dataclasses.field(metadata={"static": True})
    block_size: int = dataclasses.field(metadata={"static": True})
    bits: int = dataclasses.field(default=8, metadata={"static": True})

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def dtype(self) -> np.dtype:
        """The dtype it reads back as."""
        return np.dtype(np.float32)

    def __repr__(self) -> str:
        return (
            f"QuantizedArray(codes={_summary(self.codes)!r}, scales={_summary(self.scales)!r}, "
            f"signed={self.signed}, block_size={self.block_size}{_bits_repr(self.bits)})"
        )


jax.tree_util.register_dataclass(QuantizedArray)


def _bits_repr(bits: int) -> str:
    return "" if bits == 8 else f", bits={bits}"


def codes_shape(shape: tuple[int, ...], bits: int) -> tuple[int, ...]:
    """The shape of the codes of an array of ``shape`` (ndim >= 1): two 4-bit codes per byte,
    the last byte of an odd row half used."""
    return shape if bits == 8 else (*shape[:-1], -(-shape[-1] // 2))


def scales_shape(shape: tuple[int, ...], block_size: int, bits: int) -> tuple[int, ...]:
    """The shape of the block scales of an array of ``shape`` (ndim >= 1): one per block,
    and with 4 bits one more, a zero, in the rows of an odd last axis, which tells them
    from rows one longer (their codes have the same shape)."""
    odd = bits == 4 and shape[-1] % 2
    return (*shape[:-1], _block(shape, block_size)[1] + odd)


def is_quantized(x: Any) -> bool:
    return isinstance(x, QuantizedArray)


def _summary(x: Any) -> Any:
    """An array leaf as its dtype and shape (``uint8[8,64]``); anything else as it is."""
    if isinstance(x, (jax.sharding.PartitionSpec, jax.sharding.Sharding)):
        return x
    if hasattr(x, "shape") and hasattr(x, "dtype"):
        shape = ",".join(map(str, x.shape))
        return _Text(f"{np.dtype(x.dtype).name}[{shape}]")
    return x


class _Text(str):
    """A string that reprs without quotes, for ``_summary`` inside a dict's repr."""

    def __repr__(self) -> str:
        return str(self)


def _placeholder_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of an unquantized leaf's entry in ``QuantizedTree.scales`` (uint8).

    One axis more than the param, so that which leaves are 8-bit is read from the
    ranks, which are static; the param's leading axes, so that the param's
    spec divides it once its last axis is unsharded (see ``QuantizedTree``).
    Not empty, since orbax cannot save an array of zero size: one byte per row.
    """
    return (*shape[:-1], 1, 1) if shape else (1,)


def _unsharded_last(spec: Any) -> Any:
    """A PartitionSpec or NamedSharding with its last listed axis unsharded."""
    if isinstance(spec, jax.sharding.NamedSharding):
        return jax.sharding.NamedSharding(spec.mesh, _unsharded_last(spec.spec))
    if isinstance(spec, jax.sharding.PartitionSpec) and len(spec) and spec[-1] is not None:
        return jax.sharding.PartitionSpec(*spec[:-1], None)
    return spec


class _Mark:
    """``QuantizedTree.specs_template`` in the pytree's static data, outside its structure.

    Every mark equals every other, so that a template made by ``init`` on optax's
    placeholder has the structure of the real state, as ``tree_map_params`` requires.
    """

    __slots__ = ("on",)

    def __init__(self, on: bool):
        self.on = on

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Mark)

    def __hash__(self) -> int:
        return hash(_Mark)

    def __repr__(self) -> str:
        return f"_Mark({self.on})"


@dataclasses.dataclass(frozen=True, repr=False)
class QuantizedTree:
    """A moment of a whole params tree, its large leaves 8- or 4-bit: two trees of arrays.

    Attributes:
        codes: the params' tree structure. A quantized leaf holds uint8 codes,
            as ``QuantizedArray.codes`` (of the param's shape with 8 bits, half its
            last axis with 4); any other leaf holds the moment itself, a float array.
        scales: the params' tree structure. A quantized leaf holds its float32
            block scales, as ``QuantizedArray.scales``, of the param's rank; any
            other leaf a placeholder of one axis more, uint8 zeros of shape
            ``(*shape[:-1], 1, 1)`` (``(1,)`` for a scalar): a byte per row.
        signed: whether the signed map is used (static): True for m, False for v.
        block_size: the block length along the last axis (static).
        bits: the code width of the quantized leaves, 8 or 4 (static). Default: ``8``.
        specs_template: True for a tree made by ``init`` on a params tree with no
            leaves, as ``optax.tree_utils.tree_map_params`` makes one to find the
            params' trees in a state (static, and not part of the pytree structure).
            A tree of ``PartitionSpec`` or ``NamedSharding`` built on this structure
            gives every ``scales`` leaf its spec with the last listed axis unsharded:
            the param's spec, given to the scales by ``tree_map_params``, then
            divides them. Give the params' specs one entry per axis; with fewer, the
            scales' last listed (leading) axis is left unsharded too. Default: ``False``.

    Which leaves are 8-bit is static: a scales entry of the codes' rank is a
    quantized leaf's, one of a higher rank a placeholder. ``per_leaf`` (and so
    ``update`` and ``dequantize``) checks the dtypes against it and raises a
    ``TypeError`` where they changed, as any cast of the whole state does
    (``optax.tree_utils.tree_cast``: the codes or the placeholders are uint8),
    instead of reading codes as moments.

    The 8-bit transforms' ``mu`` and ``nu``: two trees of plain arrays rather
    than one tree of ``QuantizedArray`` nodes, so that each params leaf has
    one array in each. Flax NNX's ``nnx.Optimizer`` keeps the state of each params
    leaf in a ``Variable``, and after each update writes into it what NNX
    flattens the new state to, which splits every pytree node: a
    ``QuantizedArray`` there came back as a ``State`` of codes and scales.
    ``per_leaf`` gives the ``QuantizedArray`` view; ``dequantize`` reads it
    back as float32, and is how to read a moment, take its norm or compare it:
    optax's tree tools see codes and scales.

    Example:
        >>> import jax.numpy as jnp, adam_optax
        >>> tx = adam_optax.scale_by_adam8bit(block_size=4, min_quantized_size=8)
        >>> mu = tx.init({"w": jnp.ones((2, 6)), "b": jnp.ones(2)}).mu
        >>> mu  # doctest: +NORMALIZE_WHITESPACE
        QuantizedTree(signed=True, block_size=4, codes={'b': float32[2], 'w': uint8[2,6]},
                      scales={'b': uint8[1,1], 'w': float32[2,2]})
        >>> type(mu.per_leaf()["w"]).__name__, type(mu.per_leaf()["b"]).__name__
        ('QuantizedArray', 'ArrayImpl')
    """

    codes: Any
    scales: Any
    signed: bool
    block_size: int
    bits: int = 8
    specs_template: bool = False

    def __repr__(self) -> str:
        codes, scales = (jax.tree.map(_summary, t) for t in (self.codes, self.scales))
        return (
            f"QuantizedTree(signed={self.signed}, block_size={self.block_size}"
            f"{_bits_repr(self.bits)}, codes={codes!r}, scales={scales!r})"
        )

    def per_leaf(self) -> Any:
        """The params' tree of ``QuantizedArray`` (quantized leaves) and float arrays.

        Raises:
            TypeError: a dtype differs from the format's: uint8 codes, float32 scales,
                uint8 placeholders.
            ValueError: a scales entry has neither the shape of the blocks of its
                codes nor that of a placeholder.
        """
        kind = f"The {self.bits}-bit moment {'mu' if self.signed else 'nu (or nu_max)'}"

        def scales_shape_of(shape):
            return scales_shape(shape, self.block_size, self.bits)

        def leaf(path, codes, scales):
            where = jax.tree_util.keystr(path)
            shape, have = tuple(codes.shape), tuple(scales.shape)
            placeholder = len(have) != len(shape)  # then codes is the moment itself
            if not placeholder and self.bits == 4 and shape:  # two codes per byte
                odd = (*shape[:-1], 2 * shape[-1] - 1)
                odd_row = have == scales_shape_of(odd)
                shape = odd if odd_row else (*shape[:-1], 2 * shape[-1])
            expected = np.uint8 if placeholder else np.float32
            if np.dtype(scales.dtype) != expected:
                what = "a float32 leaf's placeholder" if placeholder else "block scales"
                raise TypeError(
                    f"{kind}: scales{where} is {np.dtype(scales.dtype).name}, "
                    f"but {what} must be {np.dtype(expected).name}. {_CAST_HINT}"
                )
            if placeholder:
                if have != _placeholder_shape(shape):
                    raise ValueError(
                        f"{kind}: scales{where} has shape {have}, "
                        f"but codes of shape {shape} need {_placeholder_shape(shape)} (a float32 "
                        "leaf's placeholder) or their blocks' scales (a quantized leaf). Pass "
                        "update the state that init returned."
                    )
                return codes
            blocks = scales_shape_of(shape) if shape else None
            if have != blocks:
                raise ValueError(
                    f"{kind}: scales{where} has shape {have}, but a leaf of shape {shape} "
                    f"({self.bits}-bit codes of shape {tuple(codes.shape)}) in blocks of "
                    f"{self.block_size} needs {blocks}. "
                    "Pass update the state that init returned."
                )
            if np.dtype(codes.dtype) != np.uint8:
                raise TypeError(
                    f"{kind}: codes{where} is {np.dtype(codes.dtype).name}, but "
                    f"this leaf is stored in {self.bits} bits (its scales are {have}): "
                    "its codes "
                    f"must be uint8. {_CAST_HINT}"
                )
            return QuantizedArray(codes, scales, shape, self.signed, self.block_size, self.bits)

        return jax.tree_util.tree_map_with_path(leaf, self.codes, self.scales)

    def replace_leaves(self, tree: Any) -> QuantizedTree:
        """The inverse of ``per_leaf``: ``tree``'s ``QuantizedArray`` and float leaves stored."""

        def codes(x):
            return x.codes if is_quantized(x) else x

        def scales(x, old):
            return x.scales if is_quantized(x) else old  # the placeholder

        return dataclasses.replace(
            self,
            codes=jax.tree.map(codes, tree, is_leaf=is_quantized),
            scales=jax.tree.map(scales, tree, self.scales, is_leaf=is_quantized),
            specs_template=False,
        )


_CAST_HINT = (
    "Was the whole optimizer state cast (optax.tree_utils.tree_cast(state, dtype) casts "
    "every leaf)? Cast the params or the updates instead, and keep the state init made."
)


def _flatten(q: QuantizedTree):
    keys = (jax.tree_util.GetAttrKey("codes"), jax.tree_util.GetAttrKey("scales"))
    static = (q.signed, q.block_size, q.bits, _Mark(q.specs_template))
    return tuple(zip(keys, (q.codes, q.scales), strict=True)), static


def _unflatten(static, children) -> QuantizedTree:
    signed, block_size, bits, mark = static
    codes, scales = children
    if mark.on:  # a tree of specs from a template: see QuantizedTree.specs_template
        scales = jax.tree.map(_unsharded_last, scales)
    return QuantizedTree(codes, scales, signed, block_size, bits, mark.on)


jax.tree_util.register_pytree_with_keys(QuantizedTree, _flatten, _unflatten)


def per_leaf(moment: Any) -> Any:
    """A moment tree leaf by leaf: a ``QuantizedTree``'s ``per_leaf``, any other as it is."""
    return moment.per_leaf() if isinstance(moment, QuantizedTree) else moment


def stored_like(moment: Any, tree: Any) -> Any:
    """``tree`` (leaf by leaf, as ``per_leaf`` gives it) stored as ``moment`` is stored."""
    return moment.replace_leaves(tree) if isinstance(moment, QuantizedTree) else tree


def zero_code(signed: bool, bits: int = 8) -> int:
    """The byte that stores zeros: the code of 0 (signed) or of the smallest value, in
    each of the byte's codes."""
    code = len(_signed_magnitudes(bits)) - 1 if signed else 0
    return code if bits == 8 else code | code << 4


# --- Blocks along the last axis ----------------------------------------------------------------
#
# The leaf itself is never padded: block maxima are plain reductions over a
# (..., blocks, block) view (and one over each row's shorter last block), and
# per-block scales are broadcast to the elements.


def _block(shape: tuple[int, ...], block_size: int) -> tuple[int, int]:
    """(block length, blocks per row) for an array of ``shape``."""
    n = shape[-1]
    block = min(block_size, n)
    return block, -(-n // block)


def _per_element(per_block: jax.Array, shape: tuple[int, ...], block_size: int) -> jax.Array:
    """(..., blocks) -> (..., n): each block's value repeated over its elements."""
    block, count = _block(shape, block_size)
    repeated = jnp.broadcast_to(per_block[..., None], (*per_block.shape, block))
    return repeated.reshape(*per_block.shape[:-1], count * block)[..., : shape[-1]]


# --- The dynamic map, arithmetically -----------------------------------------------------------


def _gather(table: np.ndarray, index: jax.Array) -> jax.Array:
    """table[index], fused by XLA into its consumer; sharded like index (explicit axes)."""
    return jnp.asarray(table).at[index].get(out_sharding=jax.typeof(index).sharding)


def _encode_magnitude(a: jax.Array, bits: int, zero: bool, u: jax.Array | None) -> jax.Array:
    """The rank in ``_magnitudes(bits, zero)`` of a value next to a in [0, 1] (float32).

    Decade e (10^-(e+1), 10^-e] holds n_e = 2^(bits-e) values spaced
    0.9·10^-e / n_e apart, whose rank starts at n_e - 1 for 10^-(e+1); below
    10^-bits the values are 0 or 10^-(bits+1) (rank 0) and 10^-bits (rank 1).
    Each decade's grid includes its bottom, so rounding on it gives the
    nearest value. With ``u`` (uniform in [0, 1), one per element) the
    rounding is stochastic instead: floor(t + u) of the position t on the
    decade's linear grid picks the upper neighbour with probability equal to
    the distance from the lower one over the gap, unbiased in value.
    """
    lowest = 0.0 if zero else 10.0 ** -(bits + 1)
    bottom = jnp.full_like(a, lowest)
    inv_step = jnp.full_like(a, 1 / (10.0**-bits - lowest))
    first = jnp.zeros_like(a)
    for e in reversed(range(bits)):
        n = 2 ** (bits - e)
        above = a > 10.0 ** -(e + 1)
        bottom = jnp.where(above, jnp.float32(10.0 ** -(e + 1)), bottom)
        inv_step = jnp.where(above, jnp.float32(n / (0.9 * 10.0**-e)), inv_step)
        first = jnp.where(above, jnp.float32(n - 1), first)
    position = jnp.maximum(a - bottom, 0) * inv_step
    offset = jnp.round(position) if u is None else jnp.floor(position + u)
    return jnp.clip(first + offset, 0, 2 ** (bits + 1) - 1)


def _encode(x: jax.Array, signed: bool, bits: int, u: jax.Array | None = None) -> jax.Array:
    """Codes of x normalized to [-1, 1] (signed) or [0, 1], one per element (uint8).

    Arithmetic, about 30 vector operations (8 bits) or 12 (4 bits). ``u``
    (uniform in [0, 1) per element) makes the rounding stochastic and
    unbiased; None rounds to the nearest code.
    """
    if signed:
        rank = _encode_magnitude(jnp.abs(x), bits - 2, zero=True, u=u)
        zero = len(_signed_magnitudes(bits)) - 1
        return (zero + jnp.where(x < 0, -rank, rank)).astype(jnp.uint8)
    return _encode_magnitude(x, bits - 1, zero=False, u=u).astype(jnp.uint8)


def _decode(codes: jax.Array, signed: bool, bits: int) -> jax.Array:
    """``code_map(signed, bits)[codes]`` (float32) of codes one per element: a gather.

    XLA:CPU fuses the gather into its consumer and runs it fast, as long as
    there is one consumer; ``apply`` sees to that.
    """
    return _gather(code_map(signed, bits), codes.astype(jnp.int32))


def _pad_last(x: jax.Array, length: int) -> jax.Array:
    """x with zeros appended along the last axis up to ``length``."""
    if length == x.shape[-1]:
        return x
    padding = [(0, 0, 0)] * (x.ndim - 1) + [(0, length - x.shape[-1], 0)]
    return jax.lax.pad(x, jnp.zeros((), x.dtype), padding)


def _max_last(*bits: jax.Array) -> tuple[jax.Array, ...]:
    """(..., L) -> (...): the max over the last axis of each, in reductions of at most 32.

    XLA:CPU fuses an elementwise producer into an integer reduction of up to
    32 elements. A longer one it splits into a windowed reduction whose input
    it materializes, and a float one it hands to a library that does the
    same. The barrier keeps XLA from merging the levels back into one.
    Several arrays are reduced together, in one loop. A padded axis makes
    XLA:CPU test every element's index, and the loop is no longer vectorized.
    """

    def level(xs):
        zeros = tuple(jnp.zeros((), x.dtype) for x in xs)
        return tuple(
            jax.lax.reduce(
                xs,
                zeros,
                lambda a, b: tuple(jnp.maximum(x, y) for x, y in zip(a, b, strict=True)),
                (xs[0].ndim - 1,),
            )
        )

    while bits[0].shape[-1] > 32:
        groups = -(-bits[0].shape[-1] // 32)
        bits = tuple(_pad_last(b, 32 * groups).reshape(*b.shape[:-1], groups, 32) for b in bits)
        bits = jax.lax.optimization_barrier(level(bits))
    return level(bits)


def _finite_block_absmax(*moments: tuple[jax.Array, ...], block_size: int) -> tuple[jax.Array, ...]:
    """Each moment's block maxima, (..., blocks): its block's largest finite |x| (0 if none).

    A moment is given as its ``_parts``. Computed on the bits: a nonnegative
    float32's bit pattern, read as an int32, grows with its value, and integer
    reductions are the ones XLA fuses with the step that computes x (see
    ``_max_last``), so that the new moments are never materialized. The parts
    are reduced to one per byte first. The rows are zero-padded to whole
    blocks inside the fusion; the leaf itself is not.
    """
    per_byte = len(moments[0])
    shape = moments[0][0].shape  # the codes'
    block, count = _block(shape, block_size // per_byte)
    bits = []
    for parts in moments:
        b = functools.reduce(jnp.maximum, map(_finite_abs_bits, parts))
        bits.append(_pad_last(b, count * block).reshape(*shape[:-1], count, block))
    tops = _max_last(*bits)
    return tuple(jax.lax.bitcast_convert_type(top, jnp.float32) for top in tops)


def _finite_abs_bits(x: jax.Array) -> jax.Array:
    """|x| where finite, else 0, as float32 bits read as int32: ordered like the values."""
    if x.dtype == jnp.float32:  # |x| and the finite test on the bits: integer operations
        b = jax.lax.bitcast_convert_type(x, jnp.int32) & 0x7FFFFFFF
        return jnp.where(b < 0x7F800000, b, 0)
    a = jnp.where(jnp.isfinite(x), jnp.abs(x), 0).astype(jnp.float32)
    return jax.lax.bitcast_convert_type(a, jnp.int32)


def _parts(x: jax.Array, bits: int) -> tuple[jax.Array, ...]:
    """(..., n) -> the elements each part of a byte stores, (..., n // per byte) each.

    With 4 bits, elements 2j and 2j + 1 of the last axis share byte j, and a
    block, since blocks are even. The codec computes each part apart and
    broadcasts block scales to the bytes: a (..., n // 2, 2) array, or scales
    broadcast to the elements and then split into pairs, are loops XLA:CPU
    does not vectorize, several times slower.
    """
    if bits == 8:
        return (x,)
    pairs = x.reshape(*x.shape[:-1], x.shape[-1] // 2, 2)
    if x.dtype.itemsize != 2:
        return pairs[..., 0], pairs[..., 1]
    # 16-bit x (bfloat16 gradients): XLA:CPU reads strided 16-bit elements slowly, so each
    # half is an integer reduction over the pair, which XLA fuses into its consumer and reads
    # contiguously; on the bits, so that every value, -0.0 and NaN too, comes through
    # unchanged. (float32 converted from 16 bits, as master_weights passes its inner
    # transform, is read strided, and slowly: XLA moves the slice before the conversion.)
    words = jax.lax.bitcast_convert_type(pairs, jnp.uint16)
    zero = np.zeros((), np.uint16)
    index = jax.lax.broadcasted_iota(jnp.int32, words.shape, words.ndim - 1)
    return tuple(
        jax.lax.bitcast_convert_type(
            jax.lax.reduce(jnp.where(index == i, words, zero), zero, jax.lax.bitwise_or, (x.ndim,)),
            x.dtype,
        )
        for i in range(2)
    )


def _read_parts(q: QuantizedArray) -> tuple[jax.Array, ...]:
    """The float32 values of ``q``, as its ``_parts`` (of an odd row's padded width)."""
    q = _widened(q)
    per_byte = 8 // q.bits
    scales = _per_element(q.scales, q.codes.shape, q.block_size // per_byte)
    codes = (q.codes,) if q.bits == 8 else (q.codes & 0xF, q.codes >> 4)
    return tuple(_decode(c, q.signed, q.bits) * scales for c in codes)


def _read_elements(q: QuantizedArray) -> jax.Array:
    """The float32 values of ``q``, one per element (of an odd row's padded width).

    For ``dequantize_array`` and the update, which the caller's ``apply_updates`` consumes
    element by element: a byte's two halves read by ``_read_parts`` and stacked make a loop
    XLA:CPU does not vectorize once the gradients are bfloat16; codes unpacked by a
    broadcast and a shift do not.
    """
    q = _widened(q)
    codes = q.codes
    if q.bits == 4:
        pairs = jnp.broadcast_to(codes[..., None], (*codes.shape, 2))
        halves = (pairs >> jnp.array([0, 4], jnp.uint8)) & jnp.uint8(0xF)
        codes = halves.reshape(*codes.shape[:-1], 2 * codes.shape[-1])
    return _decode(codes, q.signed, q.bits) * _per_element(q.scales, q.shape, q.block_size)


def _encode_with(
    parts: tuple[jax.Array, ...],
    scales: jax.Array,
    signed: bool,
    block_size: int,
    bits: int,
    key: jax.Array | None = None,
    round_up: bool = False,
) -> QuantizedArray:
    """x, given as its ``parts``, stored with the given block scales, each >= its block's
    largest finite |x|.

    A non-finite element stores 0 (signed, m) or its block's scale (unsigned,
    v): no momentum, and the largest v of its block, so its next updates are
    small. ``key`` makes the rounding stochastic (see ``_encode_magnitude``).

    ``round_up`` stores instead the smallest code whose value, read back as
    ``dequantize_array`` reads it (code value times scale, in float32), is
    >= x, for a running max that must never fall: the nearest code, then one
    code up where it reads back below x. A ceiling of the position on the
    grid would not do: x / scale in float32 can land just above a code that
    x equals, and a max that stays put would climb a code every step. Each
    scale is also rounded up, to a power of two: a value kept from the step
    before is on the old grid, and rounding it up onto a new one can add a
    code gap, so the grid changes only when its block's max doubles, not
    every time it grows.
    """
    if round_up:
        mantissa, exponent = jnp.frexp(scales)
        up = (mantissa > 0.5) & (exponent <= 127)  # 2**128 is not a float32
        scales = jnp.where(up, jnp.ldexp(jnp.ones_like(scales), exponent), scales)
    # The barrier keeps XLA from recomputing the per-block inverse per element.
    inverse = jax.lax.optimization_barrier(jnp.where(scales > 0, 1 / scales, 0))
    shape, per_byte = parts[0].shape, len(parts)  # the codes'
    inverse = _per_element(inverse, shape, block_size // per_byte)
    per_byte_scales = _per_element(scales, shape, block_size // per_byte)

    def code(i: int, x: jax.Array) -> jax.Array:
        normalized = jnp.where(jnp.isfinite(x), x * inverse, 0.0 if signed else 1.0)
        u = None
        if key is not None and not round_up:  # stochastic rounding
            u = _uniform(key, shape, stride=per_byte, offset=i)
        c = _encode(normalized, signed, bits, u)
        if round_up:  # as dequantize_array reads them
            below = _decode(c, signed, bits) * per_byte_scales < x
            c = jnp.where(below & (c < 2**bits - 1), c + 1, c).astype(jnp.uint8)
        return c

    codes = [code(i, x) for i, x in enumerate(parts)]
    packed = codes[0] if bits == 8 else codes[0] | (codes[1] << 4)
    element_shape = (*shape[:-1], shape[-1] * per_byte)
    return QuantizedArray(packed, scales, element_shape, signed, block_size, bits)


def quantize(x: jax.Array, *, signed: bool, block_size: int, bits: int = 8) -> QuantizedArray:
    """Stores x (ndim >= 1) as 8- or 4-bit codes with one float32 absmax per block.

    Blocks are ``block_size`` consecutive elements along the last axis; when
    ``block_size`` does not divide it, the last block of each row is shorter
    (the codes are not padded), and a last axis shorter than ``block_size`` is
    one block. Each element's error is at most half the code map's gap around
    it times its block's absmax: 0.9/128/2 (unsigned) or 0.9/64/2 (signed) of
    the absmax with 8 bits, 0.9/8/2 or 0.9/4/2 with 4, and much less for small
    values. 4-bit codes need an even last axis: two share a byte.

    Example:
        >>> import jax.numpy as jnp
        >>> q = quantize(jnp.array([[0.55, -1.0, 0.5]]), signed=True, block_size=256)
        >>> q.codes.dtype, q.scales
        (dtype('uint8'), Array([[1.]], dtype=float32))
        >>> dequantize_array(q)  # 0.55 = 0.1 + 0.9 · 32/64 is a code; 0.5 is not
        Array([[ 0.55   , -1.     ,  0.49375]], dtype=float32)
    """
    x = jnp.asarray(x, jnp.float32)
    if bits not in BITS or (bits == 4 and block_size % 2):
        raise ValueError(f"bits must be 8, or 4 with an even block_size; got {bits}, {block_size}.")
    parts = _parts(_pad_last(x, codes_shape(x.shape, bits)[-1] * (8 // bits)), bits)
    (scales,) = _finite_block_absmax(parts, block_size=block_size)
    return _narrowed(_encode_with(parts, scales, signed, block_size, bits), x.shape[-1])


def dequantize_array(q: QuantizedArray) -> jax.Array:
    """The float32 array a ``QuantizedArray`` stands for."""
    return _read_elements(q)[..., : q.shape[-1]]


def _widened(q: QuantizedArray) -> QuantizedArray:
    """A 4-bit ``q`` with an odd last axis as one element longer (the half byte it leaves
    unused), without the scale that marks it: the codec then sees whole bytes only."""
    if q.bits == 8 or q.shape[-1] % 2 == 0:
        return q
    shape = (*q.shape[:-1], q.shape[-1] + 1)
    return dataclasses.replace(q, shape=shape, scales=q.scales[..., :-1])


def _narrowed(q: QuantizedArray, n: int) -> QuantizedArray:
    """The inverse of ``_widened``, for a last axis of ``n``."""
    if q.shape[-1] == n:
        return q
    marker = jnp.zeros_like(q.scales[..., :1])
    shape = (*q.shape[:-1], n)
    return dataclasses.replace(q, shape=shape, scales=jnp.concatenate([q.scales, marker], -1))


def dequantize(tree: Any) -> Any:
    """The same tree with every 8-bit moment read back as float32.

    For inspecting an 8-bit optimizer state: each code c of a block with scale
    s reads back as ``code_map(signed)[c] · s``. Other leaves are returned as
    they are.

    Args:
        tree: any pytree, such as the state of ``adam8bit`` or one of its
            fields; it may hold no ``QuantizedTree`` or ``QuantizedArray`` at all.

    Returns:
        The tree with each ``QuantizedTree`` replaced by the params' tree of
        float arrays it stands for, and each ``QuantizedArray`` by the float32
        array of its ``shape``.

    Example:
        >>> import jax.numpy as jnp, numpy as np, adam_optax
        >>> tx = adam_optax.scale_by_adam8bit(min_quantized_size=0)
        >>> params = {"w": jnp.ones((2, 3))}
        >>> grads = {"w": jnp.array([[1.0, -0.55, 0.1], [0.0, 2.0, -0.5]])}
        >>> _, state = tx.update(grads, tx.init(params))
        >>> # m_1 = (1 - b1)·g. Each row is a block; 0.55 and 0.1 of a block's absmax
        >>> # are codes, 0.25 is not: -0.05 reads back as 0.2·(0.1 + 0.9·11/64).
        >>> print(np.asarray(adam_optax.dequantize(state.mu)["w"]).round(4))
        [[ 0.1    -0.055   0.01  ]
         [ 0.      0.2    -0.0509]]

        optax's tree tools see the codes and scales: ``optax.tree.get(state,
        "mu")`` returns the ``QuantizedTree``, and a norm of it would measure the
        codes. Read the moment back first:

        >>> import optax
        >>> mu = adam_optax.dequantize(optax.tree.get(state, "mu"))
        >>> print(round(float(optax.tree.norm(mu)), 4), mu["w"].dtype)
        0.2361 float32
    """

    def read(x):
        if isinstance(x, QuantizedTree):
            return dequantize(x.per_leaf())
        return dequantize_array(x) if is_quantized(x) else x

    stored = (QuantizedArray, QuantizedTree)
    return jax.tree.map(read, tree, is_leaf=lambda x: isinstance(x, stored))


# --- Stochastic rounding -----------------------------------------------------------------------


_GOLDEN = 0x9E3779B9  # 2^32 / golden ratio, odd: multiplying by it is a bijection mod 2^32


def _mix(x: jax.Array) -> jax.Array:
    """MurmurHash3's 32-bit finalizer: a bijection of uint32 in which every input
    bit flips each output bit with probability about 1/2."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x85EBCA6B)
    x = x ^ (x >> 13)
    x = x * jnp.uint32(0xC2B2AE35)
    return x ^ (x >> 16)


def fold_in(key: Any, data: Any) -> jax.Array:
    """A new uint32 key from ``key`` and ``data`` (the seed, the step, the leaf's index)."""
    key = jnp.asarray(key).astype(jnp.uint32)
    return _mix(key ^ (_mix(jnp.asarray(data).astype(jnp.uint32)) + jnp.uint32(_GOLDEN)))


def _index(shape: tuple[int, ...], stride: int = 1, offset: int = 0) -> jax.Array:
    """Each element's flat index (times ``stride``, plus ``offset``), as uint32: the
    counter the random bits hash."""
    index = jax.lax.iota(jnp.uint32, math.prod(shape))
    if stride != 1 or offset:
        index = index * jnp.uint32(stride) + jnp.uint32(offset)
    return index.reshape(shape)


def _uniform(key: jax.Array, shape: tuple[int, ...], stride: int = 1, offset: int = 0) -> jax.Array:
    """Uniform float32 in [0, 1) with 24 random bits, one per element of ``shape``.

    A counter-based hash of the element's index and ``key``: a few integer
    operations per element that XLA fuses into the rounding, where threefry
    (``jax.random``) is many times slower per element and, with one key per
    leaf, slow to compile on trees of many leaves.
    """
    bits = _mix(_index(shape, stride, offset) * jnp.uint32(_GOLDEN) + key)
    return (bits >> 8).astype(jnp.float32) * jnp.float32(2.0**-24)


def stochastic_round(x: jax.Array, dtype: Any, key: Any) -> jax.Array:
    """x rounded to ``dtype`` up or down at random, unbiased: E[result] = x.

    The result is one of the two ``dtype`` values around x, the farther one
    with probability |x - nearest| / (gap between them). Values ``dtype``
    holds exactly come back unchanged. ``key`` is a uint32 (see ``fold_in``).

    float32 to bfloat16 works on the bits: bfloat16 is float32's upper 16
    bits, and within a binade the bit pattern grows linearly with |x|, so
    adding 16 random bits below and truncating rounds |x| up with
    probability (the dropped bits) / 2^16, the carry stepping into the next
    binade where it must. Other pairs compare a uniform draw with the
    distance to the two neighbours.
    """
    key = jnp.asarray(key, jnp.uint32)
    if x.dtype == jnp.float32 and jnp.dtype(dtype) == jnp.bfloat16:
        bits = jax.lax.bitcast_convert_type(x, jnp.uint32)
        noise = _mix(_index(x.shape) * jnp.uint32(_GOLDEN) + key) >> 16
        rounded = jax.lax.bitcast_convert_type((bits + noise) & jnp.uint32(0xFFFF0000), x.dtype)
        return jnp.where(jnp.isnan(x), x, rounded).astype(dtype)
    nearest = x.astype(dtype)
    near = nearest.astype(x.dtype)
    other = jnp.nextafter(nearest, jnp.where(near > x, -jnp.inf, jnp.inf).astype(dtype))
    gap = jnp.abs(other.astype(x.dtype) - near)
    p_other = jnp.where(gap > 0, jnp.abs(x - near) / gap, 0)
    return jnp.where(_uniform(key, x.shape) < p_other, other, nearest)


# --- The codec the Adam step uses --------------------------------------------------------------


def _write_plain(value: jax.Array, like: jax.Array, key: jax.Array | None) -> jax.Array:
    """``value`` stored in the dtype of ``like``, the moment it replaces.

    ``key`` (random bits for this leaf and step) turns on stochastic rounding
    for 16-bit moments; 32-bit ones are rounded to nearest regardless.
    """
    if key is not None and jnp.dtype(like.dtype) in _SIXTEEN_BIT:
        return stochastic_round(value, like.dtype, key)
    return value.astype(like.dtype)


def _after(value: jax.Array, previous: jax.Array | None) -> jax.Array:
    """``value`` unchanged, but computed after ``previous``, whose first element it reads.

    For plain moments stored narrower than the step computes them (16-bit
    state), written in place of the old ones. A moment stored in the compute
    dtype is the step's own value, which the caller's update reads back, so it
    is written before the update and needs no copy. A narrowed one is not:
    the update (fused into ``optax.apply_updates``) recomputes it from the old
    moment, and XLA's copy insertion, which orders instructions by data
    dependence only, copies every old moment that such a write replaces. Two
    writes with no order between them keep both copies alive at once, and
    the scheduler may run the update after both; chained, the old moment
    written last is copied first, the other is copied into its freed buffer,
    and one copy per leaf is a temporary. A dependence through an optimization
    barrier does not order them on XLA:CPU. The test is never true: a 16-bit
    pattern widened to 32 bits has no bit above the 16th.
    """
    if previous is None or not value.size or not previous.size:
        return value
    first = jnp.real(previous.reshape(-1)[0]).astype(jnp.bfloat16)
    bits = jax.lax.bitcast_convert_type(first, jnp.uint16).astype(jnp.uint32)
    return jnp.where(bits >> 16 != 0, jnp.zeros_like(value), value)


def _whole_blocks_then_rest(shape: tuple[int, ...], block_size: int) -> list[tuple[int, int]]:
    """Column ranges [lo, hi) of the last axis, each reduced to block maxima in its own loop.

    Where a row's last block is short, the leaf splits in two: all whole blocks
    but the last, then the last whole block with the short one. The first part
    needs no padding (see ``_max_last``), so its loop is vectorized, where the
    padded one is not. A first part of a single block (one row) is
    not split off, nor a second part of one short block: XLA:CPU compiles
    their step with the operands of a sum in the other order, and the fused
    multiply-add then rounds some new moments 1 ulp away from the unsplit
    loop's (the stored scales would change).
    """
    n = shape[-1]
    block = _block(shape, block_size)[0]
    cut = (n // block - 1) * block
    rows = math.prod(shape[:-1])
    if n % block == 0 or cut == 0 or rows * cut < 2 * block:
        return [(0, n)]
    return [(0, cut), (cut, n)]


def _columns(m: QuantizedArray | None, lo: int, hi: int) -> QuantizedArray | None:
    """Columns [lo, hi) of the last axis, ``lo`` at a block boundary, with their scales."""
    if m is None:
        return None
    block = _block(m.shape, m.block_size)[0]
    scales = m.scales[..., lo // block : -(-hi // block)]
    shape = (*m.shape[:-1], hi - lo)
    per_byte = 8 // m.bits
    codes = m.codes[..., lo // per_byte : hi // per_byte]
    return dataclasses.replace(m, codes=codes, scales=scales, shape=shape)


def apply(
    step: Any,
    g: jax.Array,
    moments: tuple[Any, ...],
    key: jax.Array | None = None,
    round_up: tuple[bool, ...] | None = None,
):
    """Runs one optimizer ``step`` on a leaf whose moments are stored in any format.

    ``step(g, *moments)`` returns ``(update, *new_moments)``, elementwise; it
    receives plain moments as stored (and casts them itself) and 8-bit ones
    dequantized, and its new moments are stored in their old formats. A None
    moment stays None. ``key`` gives stochastic rounding its random bits.
    ``round_up`` (one flag per moment; None: none) stores the flagged 8-bit
    moments rounded up, never below the step's value, without stochastic
    rounding and against scales rounded up to powers of two: for AMSGrad's
    running max, whose stored value must never fall (see ``_encode_with``).
    A plain or 16-bit running max needs no flag: its new value is the max of
    its old, stored one and v_t, so its nearest value, and either neighbour
    of stochastic rounding, is never below the old.

    8-bit moments are stored with exact block statistics, as in bitsandbytes
    and torchao: each block's new scale is the largest finite |value| of the
    block's new moments, so the block's largest element is stored exactly and
    no rounding error accumulates in the scale. A non-finite new value is left
    out of its block's scale (see ``_encode_with`` for what it stores), so it
    harms no other element. The update is computed from the new moments
    before they are rounded.

    Plain moments that are narrowed as they are stored (16-bit state) are
    written one after another, the last moment first (see ``_after``), so that
    XLA keeps one copy of one old moment per leaf, not of each.

    8-bit: nothing the size of the leaf is materialized: XLA:CPU materializes a
    decoded (gathered) value that two fusions read, so the elementwise step is
    recomputed where it is needed, on inputs passed through an optimization
    barrier so that XLA cannot merge the copies. One loop computes the update
    (it fuses into the caller's ``apply_updates``); one loop decodes, steps and
    reduces every moment's blocks to their absmax (integer reductions over a
    (..., blocks, block) view, into which XLA fuses the step; see
    ``_max_last``; a leaf whose rows end in a short block takes two loops, see
    ``_whole_blocks_then_rest``); and per moment one loop decodes, steps again
    and encodes with the new scales. XLA copies the old codes, since it cannot
    order the update's reads of them before the writes of the new ones; the
    encoding loops are chained through a barrier, so that the moment encoded
    first has its copy in the buffer of the codes encoded last, and only one
    copy is a temporary: 1 byte per parameter, plus a few per-block arrays.
    """
    keys = [None if key is None else fold_in(key, i) for i in range(len(moments))]
    if not any(is_quantized(m) for m in moments):
        update, *new = step(g, *moments)
        written: list[Any] = [None] * len(moments)
        previous = None  # the narrowed moment written last, which the next one's write reads
        for i in reversed(range(len(moments))):
            if new[i] is None:
                continue
            written[i] = _write_plain(new[i], moments[i], keys[i])
            if written[i].dtype != new[i].dtype:
                written[i] = previous = _after(written[i], previous)
        return update, *written
    if not all(m is None or is_quantized(m) for m in moments):
        raise TypeError("A leaf's moments must be all 8-bit or none.")

    # An odd 4-bit row is stepped one element longer, a zero gradient in the half byte it
    # leaves unused: there m stays 0 and v at the map's smallest value, below its block's.
    n, moments = g.shape[-1], tuple(None if m is None else _widened(m) for m in moments)
    bits, width = next((m.bits, m.shape[-1]) for m in moments if m is not None)
    g = _pad_last(g, width)

    def new_moments(g, moments):
        """The step, on each part of the bytes (``_parts``): per part, (update, *moments)."""
        reads = [(None,) * (8 // bits) if m is None else _read_parts(m) for m in moments]
        return [step(*part) for part in zip(_parts(g, bits), *reads, strict=True)]

    def new_moment(outputs, i):  # one output of the step, as its parts
        return tuple(part[i] for part in outputs)

    reads = [None if m is None else _read_elements(m) for m in moments]
    update = step(g, *reads)[0][..., :n]
    # The step again, on inputs XLA cannot tell are the same: it then fuses the
    # step into one reduction of every moment's blocks, and once more into each
    # moment's encoding, rather than materializing the decoded moments.
    present = [i for i, m in enumerate(moments) if m is not None]
    block_size = moments[present[0]].block_size
    again = jax.lax.optimization_barrier((g, moments))
    maxima = []  # per column range, each present moment's block maxima
    for lo, hi in _whole_blocks_then_rest(g.shape, block_size):
        out = new_moments(again[0][..., lo:hi], [_columns(m, lo, hi) for m in again[1]])
        moments_out = (new_moment(out, 1 + i) for i in present)
        maxima.append(_finite_block_absmax(*moments_out, block_size=block_size))
    scales_of = {
        i: jnp.concatenate([p[j] for p in maxima], axis=-1) if len(maxima) > 1 else maxima[0][j]
        for j, i in enumerate(present)
    }
    stored: list[Any] = []
    for i, m in enumerate(moments):
        if m is not None:
            # After the moments encoded before it (``stored``): see the docstring.
            again = jax.lax.optimization_barrier((g, moments, scales_of[i], stored))
            new, scales, stored = new_moment(new_moments(*again[:2]), 1 + i), again[2], again[3]
            up = bool(round_up and round_up[i])
            m = _encode_with(new, scales, m.signed, m.block_size, m.bits, keys[i], round_up=up)
        stored.append(m)
    stored = [None if m is None else _narrowed(m, n) for m in stored]
    return update, *stored
