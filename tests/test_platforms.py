"""Every optimizer's train step lowers for CPU, CUDA, ROCm and TPU, with no host callback.

``jax.export`` lowers a jitted function for platforms this machine does not have,
so the suite shows what a GPU or TPU user would compile without the hardware. A
host callback (``jax.debug.print``, ``jax.pure_callback``) in the step would
stall an accelerator on the host at every step; the exported module must hold none.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax

PLATFORMS = ("cpu", "cuda", "rocm", "tpu")
_CUSTOM_CALL = re.compile(r"custom_call @([\w.]+)|call_target_name = \"([\w.]+)\"")


def _host_callbacks(module_text: str) -> set[str]:
    """The custom_call targets in a StableHLO module that call back into Python."""
    targets = {a or b for a, b in _CUSTOM_CALL.findall(module_text)}
    return {t for t in targets if "callback" in t or "python" in t}


def _schedule():
    return optax.warmup_cosine_decay_schedule(0.0, 1e-2, warmup_steps=10, decay_steps=100)


def _decay_mask(params):
    return {"w": True, "b": False}


# (id, optimizer, params dtype): every alias, the main compositions, and the dtype
# advice of the README's Platforms section: bfloat16 params with a float32 nu (TPU),
# float16 params, whose nu is float32 by default (GPU).
CASES = [
    ("adam", lambda: adam_optax.adam(1e-3), jnp.float32),
    ("adamw", lambda: adam_optax.adamw(1e-3), jnp.float32),
    ("nadam", lambda: adam_optax.nadam(1e-3), jnp.float32),
    ("nadamw", lambda: adam_optax.nadamw(1e-3), jnp.float32),
    ("amsgrad", lambda: adam_optax.amsgrad(1e-3), jnp.float32),
    ("adamax", lambda: adam_optax.adamax(1e-3), jnp.float32),
    ("adamaxw", lambda: adam_optax.adamaxw(1e-3), jnp.float32),
    ("amsgrad_eps_hat", lambda: adam_optax.adam(1e-3, amsgrad=True, eps_hat=True), jnp.float32),
    (
        "chain_clip_schedule",
        lambda: optax.chain(
            optax.clip_by_global_norm(1.0), adam_optax.adamw(_schedule(), weight_decay=1e-2)
        ),
        jnp.float32,
    ),
    (
        "inject_hyperparams",
        lambda: optax.inject_hyperparams(adam_optax.adam)(learning_rate=1e-3),
        jnp.float32,
    ),
    (
        "multi_steps",
        lambda: optax.MultiSteps(adam_optax.adam(1e-3), every_k_schedule=4),
        jnp.float32,
    ),
    (
        "adamw_masked",
        lambda: adam_optax.adamw(1e-3, weight_decay=1e-2, mask=_decay_mask),
        jnp.float32,
    ),
    ("mu_bfloat16", lambda: adam_optax.adam(1e-3, mu_dtype=jnp.bfloat16), jnp.float32),
    ("bf16_params_f32_nu", lambda: adam_optax.adam(1e-3, nu_dtype=jnp.float32), jnp.bfloat16),
    ("f16_params", lambda: adam_optax.adam(1e-3), jnp.float16),
]


def _train_step(tx):
    def loss(params, x, y):
        return jnp.mean((x @ params["w"] + params["b"] - y).astype(jnp.float32) ** 2)

    def step(params, state, x, y):
        grads = jax.grad(loss)(params, x, y)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    return jax.jit(step, donate_argnums=(0, 1))


def _export(tx, params, x, y, state=None):
    """Exports the donated train step for every platform; returns the module text.

    Every params and state buffer must be updated in place: the module aliases
    each of them to an output (a dtype or weak type that changed in the step
    would leave its buffer unaliased).
    """
    if state is None:
        state = jax.eval_shape(tx.init, params)
    exported = jax.export.export(_train_step(tx), platforms=PLATFORMS)(params, state, x, y)
    assert exported.platforms == PLATFORMS
    module = exported.mlir_module()
    donated = len(jax.tree.leaves((params, state)))
    aliased = module.count("tf.aliasing_output") + module.count("jax.buffer_donor = true")
    assert aliased == donated
    return module


_SHAPES = (("w", (8, 4)), ("b", (4,)))


def _shapes(dtype):
    params = {k: jax.ShapeDtypeStruct(shape, dtype) for k, shape in _SHAPES}
    return params, jax.ShapeDtypeStruct((16, 8), dtype), jax.ShapeDtypeStruct((16, 4), dtype)


@pytest.mark.parametrize("make, dtype", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_train_step_exports_for_every_platform(make, dtype):
    module = _export(make(), *_shapes(dtype))
    assert "stablehlo" in module
    assert _host_callbacks(module) == set()


def test_sharded_train_step_exports_for_every_platform():
    """A step on the 8-device host mesh: the state is sharded like its params."""
    if jax.device_count() < 8:
        pytest.skip("needs 8 devices (see conftest)")
    mesh = Mesh(np.array(jax.devices()[:8]).reshape(4, 2), ("data", "model"))
    specs = {"w": P("data", "model"), "b": P("model")}
    tx = adam_optax.adamw(1e-3, weight_decay=1e-2)
    state = tx.init({k: jnp.zeros(s, device=NamedSharding(mesh, specs[k])) for k, s in _SHAPES})

    def shaped(a):
        return jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding)

    params = jax.tree.map(shaped, state[0].mu)
    data = NamedSharding(mesh, P("data"))
    x = jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=data)
    y = jax.ShapeDtypeStruct((16, 4), jnp.float32, sharding=data)
    module = _export(tx, params, x, y, jax.tree.map(shaped, state))
    assert "mhlo.num_partitions = 8" in module
    signature = module[module.index("func.func public @main") :].split("\n", 1)[0]
    # params['w'], mu['w'] and nu['w'] arrive split over both mesh axes.
    assert signature.count('[{"data"}, {"model"}]') == 3
    assert _host_callbacks(module) == set()


def test_host_callback_detector_finds_one():
    """The check above can fail: a step with jax.debug.print has a host callback."""

    def noisy(x):
        jax.debug.print("x={x}", x=x)
        return x + 1

    module = jax.jit(noisy).lower(jnp.ones(2)).as_text()
    assert _host_callbacks(module)
