"""offload_state: the state in host memory between steps, on this machine's CPU backend.

The CPU backend has "device", "pinned_host" and "unpinned_host" memories, all the same
RAM, so these tests check the mechanics (where every leaf lives, identical trajectories),
not the speed, which only a GPU or TPU shows (benchmarks/scale.py). Every step's result is
blocked on (see tests/test_state_sharding.py).
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import adam_optax
import adam_optax.offload

SHAPES = {"w": (16, 8), "v": (8, 300)}  # v is quantized in the 8- and 4-bit cases


def make_params(sharding=None):
    rng = np.random.default_rng(0)
    params = {k: jnp.asarray(rng.normal(size=s), jnp.float32) for k, s in SHAPES.items()}
    return params if sharding is None else jax.device_put(params, sharding)


def loss(params):
    return sum(jnp.sum(jnp.sin(p) * (1 + i)) for i, p in enumerate(jax.tree.leaves(params)))


def data_mesh():
    return Mesh(np.array(jax.devices()[:8]), ("data",))


CASES = {  # name: (transform factory, params' sharding factory)
    "chain(clip, adamw)": (
        lambda: optax.chain(optax.clip_by_global_norm(1.0), adam_optax.adamw(1e-2)),
        lambda: None,
    ),
    "MultiSteps(adam, 2)": (
        lambda: optax.MultiSteps(adam_optax.adam(1e-2), 2).gradient_transformation(),
        lambda: None,
    ),
    # 4-bit here and 8-bit below: the two code widths, each at one test's cost.
    "shard_state(adamw4bit), 8 devices": (
        lambda: adam_optax.shard_state(
            adam_optax.adamw4bit(1e-2, min_quantized_size=1024), data_mesh()
        ),
        lambda: NamedSharding(data_mesh(), P()),
    ),
    "master_weights(adamw8bit), bf16 params": (
        lambda: adam_optax.master_weights(adam_optax.adamw8bit(1e-2, min_quantized_size=1024)),
        lambda: None,
    ),
}


def lands_in_host_memory() -> bool:
    """Whether this jax puts an array sent to host memory there (its CPU backend before
    0.10.2 leaves it in device memory), checked here without adam_optax."""
    x = jax.device_put(jnp.zeros(3), jax.memory.Space.Host)
    return x.sharding.memory_kind == "pinned_host"


needs_host_memory = pytest.mark.skipif(
    not lands_in_host_memory(),
    reason=f"jax {jax.__version__}'s CPU backend leaves host-memory arrays in device memory",
)


def assert_in(memory_kind, tree):
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        assert leaf.sharding.memory_kind == memory_kind, jax.tree_util.keystr(path)


def leaves(*trees):
    return jax.tree.leaves(trees)


def run(tx, params, steps):
    """`steps` jitted steps (one compile); the params and the state after each."""

    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss)(params), state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    history = [(params, state)]
    for _ in range(steps):
        params, state = jax.block_until_ready(step(params, state))
        history.append((params, state))
    return history


@needs_host_memory
@pytest.mark.parametrize("name", list(CASES))
def test_the_state_lives_in_host_memory_and_the_trajectory_is_unchanged(name):
    make_tx, make_sharding = CASES[name]
    if "8 devices" in name and jax.device_count() < 8:
        pytest.skip("needs 8 devices (see conftest)")
    params = make_params(make_sharding())
    if "bf16 params" in name:
        params = jax.tree.map(lambda p: p.astype(jnp.bfloat16), params)
    expected = run(make_tx(), params, steps=3)
    offloaded = run(adam_optax.offload_state(make_tx()), params, steps=3)
    for bits in (8, 4):  # the low-bit cases store v's moments in their code width
        if f"{bits}bit" in name:
            mu = optax.tree.get(offloaded[-1][1], "mu")
            assert mu.bits == bits and mu.codes["v"].shape == (8, 300 * bits // 8)
    for (p, state), (p_ref, state_ref) in zip(offloaded, expected, strict=True):
        assert_in("pinned_host", state)  # after init and after every jitted step
        assert_in("device", p)
        assert jax.tree.structure(state) == jax.tree.structure(state_ref)
        for a, b in zip(leaves(p, state), leaves(p_ref, state_ref), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bit for bit
            assert a.sharding.is_equivalent_to(
                b.sharding.with_memory_kind(a.sharding.memory_kind), a.ndim
            )


def test_a_backend_without_the_memory_kind_is_refused_at_init(monkeypatch):
    """A device with device memory only (as some accelerators' runtimes are): the error
    names the memory kinds it has. Simulated: this CPU has host memories."""
    monkeypatch.setattr(adam_optax.offload, "_memory_kinds", lambda device: ["device"])
    tx = adam_optax.offload_state(adam_optax.adam(1e-3))
    with pytest.raises(
        ValueError, match=r"has no 'pinned_host' memory; its memory kinds are \['device'\]"
    ):
        tx.init(make_params())


def test_init_refuses_exactly_where_the_backend_would_leave_the_state_on_the_device():
    """On a jax whose CPU backend ignores the transfer (0.9.1 to 0.10.1), init refuses
    rather than hand back a state that only claims to be offloaded."""
    tx = adam_optax.offload_state(adam_optax.adam(1e-3))
    if lands_in_host_memory():
        assert_in("pinned_host", tx.init(make_params()))
    else:
        with pytest.raises(ValueError, match=r"leaves arrays sent there in device memory"):
            tx.init(make_params())
        with pytest.raises(ValueError, match=r"leaves arrays sent there in device memory"):
            jax.jit(tx.init)(make_params())


def test_a_memory_kind_jit_cannot_name_is_refused():
    with pytest.raises(
        ValueError, match=r"memory_kind='unpinned_host' is not supported; pass 'pinned_host'"
    ):
        adam_optax.offload_state(adam_optax.adam(1e-3), memory_kind="unpinned_host")


@needs_host_memory
def test_an_orbax_checkpoint_restores_the_state_in_host_memory(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    tx = adam_optax.offload_state(adam_optax.adamw(1e-2))
    params = make_params()
    state = tx.init(params)
    updates, state = jax.block_until_ready(
        jax.jit(tx.update)(jax.grad(loss)(params), state, params)
    )
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "state", state)
        checkpointer.wait_until_finished()
        target = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        restored = checkpointer.restore(tmp_path / "state", target)
    assert_in("pinned_host", restored)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(state), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    jax.block_until_ready(jax.jit(tx.update)(updates, restored, params))  # it steps on


@needs_host_memory
def test_a_jitted_init_puts_the_state_in_host_memory():
    tx = adam_optax.offload_state(adam_optax.adam(1e-3))
    assert_in("pinned_host", jax.jit(tx.init)(make_params()))
