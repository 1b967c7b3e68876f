"""The 4-bit maps study, tiny: its fake quantizer against NumPy, its rounding, its report.

The full study (benchmarks/four_bit_maps.py) takes about a quarter of an hour. Here the
quantizer is checked against float64 NumPy recomputations written from the definitions
(block and rank-1 scales by hand, nearest map value by argmin), stochastic rounding for
its mean and its support, the optimizer against optax.adamw where nothing is quantized,
and the study's machinery runs in-process on one quick task with two rows.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "four_bit_maps.py"
sys.path.insert(0, str(SCRIPT.parent))  # the benchmarks import their siblings by name
spec = importlib.util.spec_from_file_location("four_bit_maps", SCRIPT)
study = importlib.util.module_from_spec(spec)
spec.loader.exec_module(study)


def nearest(normalized: np.ndarray, values: tuple[float, ...]) -> np.ndarray:
    table = np.asarray(values)
    return table[np.abs(normalized[..., None] - table).argmin(-1)]


def test_the_maps_are_the_ones_the_study_names() -> None:
    de = study.MAPS["DE"]
    magnitudes = [0, 0.01, 0.055, 0.1, 0.325, 0.55, 0.775, 1]
    np.testing.assert_allclose(de, sorted({-m for m in magnitudes} | set(magnitudes)))
    assert len(study.MAPS["DE-0"]) == 16 and study.MAPS["DE-0"][0] == pytest.approx(1e-4)
    np.testing.assert_allclose(study.MAPS["Linear-0"], np.arange(1, 17) / 16)
    assert all(np.all(np.diff(v) > 0) for v in study.MAPS.values())


def test_blockwise_round_to_nearest_matches_numpy() -> None:
    x = np.random.default_rng(0).normal(size=(3, 20)) * [[1.0], [1e-3], [50.0]]
    x[1, 16:] = 0.0  # an all-zero block reads back as zeros
    got = np.asarray(study.fake_quantize(jnp.asarray(x, jnp.float32), study.Format("DE", "B8")))
    scale = np.concatenate(  # blocks of 8 along the last axis, the last one of 4
        [np.abs(x[:, s : s + 8]).max(1, keepdims=True).repeat(len(range(s, min(s + 8, 20))), 1)
         for s in range(0, 20, 8)], axis=1)  # fmt: skip
    expected = nearest(np.divide(x, scale, out=np.zeros_like(x), where=scale > 0),
                       study.MAPS["DE"]) * scale  # fmt: skip
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=0)
    assert np.all(got[1, 16:] == 0)


def test_rank1_scales_are_the_min_of_row_and_column_maxima() -> None:
    rng = np.random.default_rng(1)
    v = rng.exponential(size=(5, 7)) * rng.exponential(size=(5, 1)) ** 3  # uneven rows
    scale = np.array([[min(v[i].max(), v[:, j].max()) for j in range(7)] for i in range(5)])
    got = study.fake_quantize(jnp.asarray(v, jnp.float32), study.Format("DE-0", "Rank-1"))
    np.testing.assert_allclose(got, nearest(v / scale, study.MAPS["DE-0"]) * scale, rtol=1e-6)
    # ndim 3: the min over axes of the max over the other two; a vector: blocks of 128
    t = rng.exponential(size=(2, 3, 4))
    by_hand = np.minimum(
        np.minimum(t.max((1, 2))[:, None, None], t.max((0, 2))[None, :, None]),
        t.max((0, 1))[None, None, :],
    )
    np.testing.assert_allclose(study.scales(jnp.asarray(t, jnp.float32), "Rank-1"), by_hand,
                               rtol=1e-6)  # fmt: skip
    w = rng.normal(size=300)
    blocks = [np.abs(w[s : s + 128]).max().repeat(len(w[s : s + 128])) for s in (0, 128, 256)]
    np.testing.assert_allclose(study.scales(jnp.asarray(w, jnp.float32), "Rank-1"),
                               np.concatenate(blocks), rtol=1e-6)  # fmt: skip


def test_stochastic_rounding_is_unbiased_and_picks_a_neighbour() -> None:
    draws = 8000
    x = np.linspace(-1, 1, 41)[None]  # one block: scale 1, map values and points between
    table = np.asarray(study.MAPS["DE"])
    lower = table[np.searchsorted(table, x, side="right") - 1].clip(max=table[-2])
    upper = table[np.searchsorted(table, lower, side="right")]
    tiled = jnp.asarray(np.repeat(x, draws, 0), jnp.float32)
    for u in study.uniform_pair(jax.random.key(0), tiled.shape):  # each half of the draw
        got = np.asarray(study.fake_quantize(tiled, study.Format("DE", "B128"), u), np.float64)
        assert np.all(np.isclose(got, lower, rtol=1e-6) | np.isclose(got, upper, rtol=1e-6))
        sd = (upper - lower) / 2 / np.sqrt(draws)  # the largest the mean's sd can be
        assert np.all(np.abs(got.mean(0) - x[0]) <= 5 * sd + 1e-6)


def test_the_optimizer_is_adamw_where_nothing_is_quantized_and_stores_quantized_moments() -> None:
    params = {"w": jnp.ones((64, 64)), "b": jnp.ones(10)}
    m_format, v_format = study.Format("DE", "B128"), study.Format("Linear-0", "Rank-1")
    plain = optax.chain(
        study.scale_by_fake_quantized_adam(m_format, v_format, min_quantized_size=10**9),
        optax.add_decayed_weights(1e-2),
        optax.scale_by_learning_rate(1e-2),
    )
    rtn = study.adamw_fake4bit(1e-2, 1e-2, m_format, v_format, stochastic_rounding=False)
    reference = optax.adamw(1e-2, weight_decay=1e-2)
    txs = (plain, rtn, reference)
    states = [tx.init(params) for tx in txs]
    for step in range(2):
        keys = dict(zip(params, jax.random.split(jax.random.key(step)), strict=True))
        g = {k: jax.random.normal(keys[k], p.shape) for k, p in params.items()}
        (u_plain, _), (_, s_rtn), (u_ref, _) = stepped = [
            tx.update(g, s, params) for tx, s in zip(txs, states, strict=True)
        ]
        states = [s for _, s in stepped]
        for k in params:
            np.testing.assert_allclose(u_plain[k], u_ref[k], rtol=1e-5, atol=1e-9)
        if step == 0:  # m_1 = 0.1·g: stored rounded in "w" (4,096 elements), exact in "b"
            m1 = 0.1 * np.asarray(g["w"], np.float64)
            scale = np.abs(m1).max(-1, keepdims=True)  # a row of 64 is one block
            expected = nearest(m1 / scale, study.MAPS["DE"]) * scale
            np.testing.assert_allclose(s_rtn[0].mu["w"], expected, rtol=1e-6)
            np.testing.assert_allclose(s_rtn[0].mu["b"], 0.1 * g["b"], rtol=1e-6)


def test_the_quick_study_reports_its_rows(tmp_path: Path) -> None:
    quality = study.quality
    rows = quality.select(study.rows(), ["m DE B128, v Linear-0 Rank-1"])
    quality.run_all(True, [0, 1], ["teacher"], tmp_path, "test", rows, nu_decay_steps=(0, 0),
                    name=study.NAME, report=study.report)  # fmt: skip
    text = (tmp_path / f"{study.NAME}.md").read_text()
    assert "| m DE B128, v Linear-0 Rank-1 | " in text and "| float32 spread | " in text
    result = json.loads((tmp_path / f"{study.NAME}.json").read_text())
    entry = result["summary"]["teacher-student regression"]["test_loss"]
    assert list(entry["variants"]) == [quality.REFERENCE, "m DE B128, v Linear-0 Rank-1"]
    assert all(np.isfinite(entry["variants"][n]["delta"]) for n in entry["variants"])
