"""The test tables, as plain data: optimizer configurations and bad inputs.

Every property and parity test iterates CONFIGS; test_errors iterates ERRORS.
A new option is one new row here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax.numpy as jnp
import optax

import adam_optax


class Config(NamedTuple):
    id: str
    alias: str  # the adam_optax function
    kwargs: dict[str, Any]  # its arguments, learning rate included
    optax: tuple[str, dict[str, Any]] | None  # the optax alias with the same math
    reference: dict[str, Any] | None  # options of tests/reference.py; None: not comparable


_LR = 1e-2


def _schedule(count):
    """Exponential decay, written so NumPy and JAX evaluate the same formula."""
    return 1e-2 * 0.99**count


CONFIGS = [
    Config("adam", "adam", {"learning_rate": _LR}, ("adam", {}), {}),
    Config(
        "adam_tuned",
        "adam",
        {"learning_rate": 3e-3, "b1": 0.5, "b2": 0.9, "eps": 1e-6, "eps_root": 1e-10},
        ("adam", {}),
        {},
    ),
    Config("adam_b1_zero", "adam", {"learning_rate": _LR, "b1": 0.0}, ("adam", {}), {}),
    Config(
        "adam_schedule",
        "adam",
        {"learning_rate": _schedule},
        ("adam", {}),
        {},
    ),
    Config(
        "adamw",
        "adamw",
        {"learning_rate": _LR, "weight_decay": 0.1},
        ("adamw", {}),
        {"weight_decay": 0.1},
    ),
    Config("nadam", "nadam", {"learning_rate": _LR}, ("nadam", {}), {"nesterov": True}),
    Config(
        "nadamw",
        "nadamw",
        {"learning_rate": _LR, "weight_decay": 0.05},
        ("nadamw", {}),
        {"nesterov": True, "weight_decay": 0.05},
    ),
    Config(
        "amsgrad_optax",
        "amsgrad",
        {"learning_rate": _LR},
        ("amsgrad", {}),
        {"amsgrad": "corrected"},
    ),
    Config(
        "amsgrad_optax_uncorrected",
        "amsgrad",
        {"learning_rate": _LR, "bias_correction_mu": False, "bias_correction_nu": False},
        ("amsgrad", {}),
        {"amsgrad": "uncorrected"},
    ),
    Config(
        "adam_amsgrad",
        "adam",
        {"learning_rate": _LR, "amsgrad": True},
        None,
        {"amsgrad": "raw"},
    ),
    Config(
        "adamw_amsgrad",
        "adamw",
        {"learning_rate": _LR, "weight_decay": 0.1, "amsgrad": True},
        None,
        {"amsgrad": "raw", "weight_decay": 0.1},
    ),
    Config(
        "adam_eps_hat",
        "adam",
        {"learning_rate": _LR, "eps": 1e-7, "eps_hat": True},
        None,
        {"eps_hat": True},
    ),
    Config(
        "adam_eps_hat_amsgrad",
        "adam",
        {"learning_rate": _LR, "eps": 1e-7, "eps_hat": True, "amsgrad": True},
        None,
        {"eps_hat": True, "amsgrad": "raw"},
    ),
    Config("adamax", "adamax", {"learning_rate": _LR}, ("adamax", {}), {"adamax": True}),
    Config(
        "adamaxw",
        "adamaxw",
        {"learning_rate": _LR, "weight_decay": 0.1},
        ("adamaxw", {}),
        {"adamax": True, "weight_decay": 0.1},
    ),
    Config(
        "adam_mu_bfloat16",
        "adam",
        {"learning_rate": _LR, "mu_dtype": jnp.bfloat16},
        ("adam", {}),
        None,
    ),
    Config(
        "adam_nu_float32",
        "adam",
        {"learning_rate": _LR, "nu_dtype": jnp.float32},
        ("adam", {}),
        None,
    ),
]

# Transforms outside CONFIGS' parity and property tests (8- and 4-bit state, master
# weights), for the tests that every transform must pass, such as tests/test_empty_leaves.py.
MORE_CONFIGS = [
    Config(
        "adamw8bit_every_leaf",
        "adamw8bit",
        {"learning_rate": _LR, "weight_decay": 0.1, "min_quantized_size": 0},
        None,
        None,
    ),
    Config(
        "adam8bit_amsgrad_every_leaf",
        "adam8bit",
        {"learning_rate": _LR, "amsgrad": True, "min_quantized_size": 0, "block_size": 4},
        None,
        None,
    ),
    Config(
        "adamw4bit_every_leaf",  # w (3, 8): one block of 8 per row, four bytes of codes
        "adamw4bit",
        {"learning_rate": _LR, "weight_decay": 0.1, "min_quantized_size": 0},
        None,
        None,
    ),
    Config(
        "adam4bit_amsgrad_every_leaf",
        "adam4bit",
        {"learning_rate": _LR, "amsgrad": True, "min_quantized_size": 0, "block_size": 4},
        None,
        None,
    ),
    Config(
        "master_weights_adamw",
        "master_weights",
        {"tx": adam_optax.adamw(_LR)},
        None,
        None,
    ),
    Config(
        "master_weights_adamw8bit",
        "master_weights",
        {"tx": adam_optax.adamw8bit(_LR, min_quantized_size=0)},
        None,
        None,
    ),
]


class ErrorCase(NamedTuple):
    id: str
    alias: str
    kwargs: dict[str, Any]
    error: type[Exception]
    match: str  # a regex the message must match
    params: Any = None  # when given, the error comes at init(params) ...
    grads: Any = None  # ... or, when grads are given too, at update(grads, state), under jit


ERRORS = [
    ErrorCase(
        "master_weights_correction_bits",
        "master_weights",
        {"tx": optax.sgd(0.1), "correction_bits": 12},
        ValueError,
        r"correction_bits must be 8 or 16, got 12\. 8 stores an int8 correction",
    ),
    ErrorCase(
        "master_weights_correction_bits_array",  # as optax.inject_hyperparams passes it
        "master_weights",
        {"tx": optax.sgd(0.1), "correction_bits": jnp.asarray(8)},
        TypeError,
        r"correction_bits must be a Python int, 8 or 16, got an array .*static_args",
    ),
    ErrorCase(
        "master_weights_update_dtype",
        "master_weights",
        {"tx": optax.sgd(0.1), "update_dtype": jnp.int8},
        TypeError,
        r"update_dtype must be a real floating dtype such as jnp\.float32 or jnp\.bfloat16, "
        r"got int8",
    ),
    ErrorCase(
        "master_weights_uncalled_factory",
        "master_weights",
        {"tx": optax.adamw},
        TypeError,
        r"tx must be an optax\.GradientTransformation, got the function .*adamw itself: call it",
    ),
    ErrorCase(
        "offload_state_uncalled_factory",
        "offload_state",
        {"tx": optax.adam},
        TypeError,
        r"tx must be an optax\.GradientTransformation, got the function .*adam itself: call it",
    ),
    ErrorCase(
        "offload_state_memory_kind",
        "offload_state",
        {"tx": optax.sgd(0.1), "memory_kind": "unpinned_host"},
        ValueError,
        r"memory_kind='unpinned_host' is not supported; pass 'pinned_host'",
    ),
    ErrorCase(
        "b1_one",
        "adam",
        {"learning_rate": 1e-3, "b1": 1.0},
        ValueError,
        r"b1 must be in \[0, 1\), got 1\.0\. .*1 would never forget",
    ),
    ErrorCase(
        "b1_negative",
        "adam",
        {"learning_rate": 1e-3, "b1": -0.1},
        ValueError,
        r"b1 must be in \[0, 1\), got -0\.1\. .*a negative decay flips the average's sign",
    ),
    ErrorCase(
        "b2_one",
        "adamw",
        {"learning_rate": 1e-3, "b2": 1.0},
        ValueError,
        r"b2 must be in \[0, 1\), got 1\.0",
    ),
    ErrorCase(
        "b2_above_one",
        "nadam",
        {"learning_rate": 1e-3, "b2": 1.5},
        ValueError,
        r"b2 must be in \[0, 1\), got 1\.5\. .*above 1 the average grows without bound",
    ),
    ErrorCase(
        "b2_adamax",
        "adamax",
        {"learning_rate": 1e-3, "b2": 1.0},
        ValueError,
        r"b2 must be in \[0, 1\)",
    ),
    ErrorCase(
        "eps_negative",
        "adam",
        {"learning_rate": 1e-3, "eps": -1e-8},
        ValueError,
        r"eps must be >= 0, got -1e-08",
    ),
    ErrorCase(
        "eps_root_negative",
        "adam",
        {"learning_rate": 1e-3, "eps_root": -1.0},
        ValueError,
        r"eps_root must be >= 0",
    ),
    ErrorCase(
        "eps_nan",
        "adam",
        {"learning_rate": 1e-3, "eps": float("nan")},
        ValueError,
        r"eps must be finite, got nan",
    ),
    ErrorCase(
        "lr_negative",
        "adam",
        {"learning_rate": -1e-3},
        ValueError,
        r"learning_rate must be >= 0, got -0\.001",
    ),
    ErrorCase(
        "lr_inf",
        "adamw",
        {"learning_rate": float("inf")},
        ValueError,
        r"learning_rate must be finite",
    ),
    ErrorCase(
        "lr_string",
        "adam",
        {"learning_rate": "0.001"},
        TypeError,
        r"learning_rate must be a real number, got '0\.001'",
    ),
    ErrorCase(
        "lr_none",
        "adam",
        {"learning_rate": None},
        TypeError,
        r"learning_rate must be a real number, got None",
    ),
    ErrorCase(
        "lr_vector",
        "adam",
        {"learning_rate": jnp.ones(3)},
        ValueError,
        r"learning_rate must be a scalar, got an array of shape \(3,\)",
    ),
    ErrorCase(
        "b1_bool",
        "adam",
        {"learning_rate": 1e-3, "b1": True},
        TypeError,
        r"b1 must be a real number, got True",
    ),
    ErrorCase(
        "b1_complex",
        "adam",
        {"learning_rate": 1e-3, "b1": 0.9j},
        TypeError,
        r"b1 must be a real number",
    ),
    ErrorCase(
        "b2_bfloat16",
        "adam",
        {"learning_rate": 1e-3, "b2": jnp.asarray(0.999, jnp.bfloat16)},
        TypeError,
        r"b2 arrived as bfloat16",
    ),
    ErrorCase(
        "weight_decay_negative",
        "adamw",
        {"learning_rate": 1e-3, "weight_decay": -0.1},
        ValueError,
        r"weight_decay must be >= 0, got -0\.1",
    ),
    ErrorCase(
        "weight_decay_string",
        "adamaxw",
        {"learning_rate": 1e-3, "weight_decay": "0.1"},
        TypeError,
        r"weight_decay must be a real number",
    ),
    ErrorCase(
        "mu_dtype_int",
        "adam",
        {"learning_rate": 1e-3, "mu_dtype": jnp.int32},
        TypeError,
        r"mu_dtype must be a floating or complex dtype .* got int32",
    ),
    ErrorCase(
        "b2_negative_adamax",
        "adamax",
        {"learning_rate": 1e-3, "b2": -0.5},
        ValueError,
        r"b2 must be in \[0, 1\), got -0\.5\. .*negative decay",
    ),
    ErrorCase(
        "nu_dtype_complex",
        "adam",
        {"learning_rate": 1e-3, "nu_dtype": jnp.complex64},
        TypeError,
        r"nu_dtype must be a real floating dtype .* got complex64\. It holds \|g\|²",
    ),
    ErrorCase(
        "mu_dtype_garbage",
        "adamw",
        {"learning_rate": 1e-3, "mu_dtype": "float33"},
        TypeError,
        r"mu_dtype must be a floating dtype, got 'float33'",
    ),
    ErrorCase(
        "nesterov_string",
        "adam",
        {"learning_rate": 1e-3, "nesterov": "yes"},
        TypeError,
        r"nesterov must be True or False, got 'yes'",
    ),
    ErrorCase(
        "amsgrad_int",
        "adam",
        {"learning_rate": 1e-3, "amsgrad": 1},
        TypeError,
        r"amsgrad must be True or False, got 1",
    ),
    ErrorCase(
        "eps_hat_none",
        "adam",
        {"learning_rate": 1e-3, "eps_hat": None},
        TypeError,
        r"eps_hat must be True or False",
    ),
    ErrorCase(
        "block_size_zero",
        "adam8bit",
        {"learning_rate": 1e-3, "block_size": 0},
        ValueError,
        r"block_size must be a positive integer, got 0",
    ),
    ErrorCase(
        "block_size_float",
        "adamw8bit",
        {"learning_rate": 1e-3, "block_size": 256.0},
        TypeError,
        r"block_size must be an integer, got 256\.0 of type float",
    ),
    ErrorCase(
        "block_size_bool",
        "scale_by_adam8bit",
        {"block_size": True},
        TypeError,
        r"block_size must be an integer, got True",
    ),
    ErrorCase(
        "min_quantized_size_negative",
        "adam8bit",
        {"learning_rate": 1e-3, "min_quantized_size": -1},
        ValueError,
        r"min_quantized_size must be >= 0, got -1",
    ),
    ErrorCase(
        "stochastic_rounding_8bit_int",
        "adam8bit",
        {"learning_rate": 1e-3, "stochastic_rounding": 1},
        TypeError,
        r"stochastic_rounding must be True or False, got 1",
    ),
    ErrorCase(
        "stochastic_rounding_8bit_string",
        "scale_by_adam8bit",
        {"stochastic_rounding": "no"},
        TypeError,
        r"stochastic_rounding must be True or False, got 'no'",
    ),
    ErrorCase(
        "seed_8bit_too_large",
        "adamw8bit",
        {"learning_rate": 1e-3, "seed": 2**32},
        ValueError,
        r"seed must be in \[0, 2\*\*32\), got 4294967296",
    ),
    ErrorCase(
        "seed_8bit_float",
        "scale_by_adam8bit",
        {"seed": 0.5},
        TypeError,
        r"seed must be an integer, got 0\.5",
    ),
    ErrorCase(
        "block_size_odd_4bit",
        "adam4bit",
        {"learning_rate": 1e-3, "block_size": 127},
        ValueError,
        r"block_size must be even for 4-bit moments \(two codes share a byte\), got 127\.",
    ),
    ErrorCase(
        "block_size_one_4bit",  # positive, but odd
        "scale_by_adam4bit",
        {"block_size": 1},
        ValueError,
        r"block_size must be even for 4-bit moments .*got 1\.",
    ),
    ErrorCase(
        "block_size_zero_4bit",
        "adamw4bit",
        {"learning_rate": 1e-3, "block_size": 0},
        ValueError,
        r"block_size must be a positive integer, got 0",
    ),
    ErrorCase(
        "block_size_negative_even_4bit",
        "adam4bit",
        {"learning_rate": 1e-3, "block_size": -2},
        ValueError,
        r"block_size must be a positive integer, got -2",
    ),
    ErrorCase(
        "block_size_float_4bit",
        "adamw4bit",
        {"learning_rate": 1e-3, "block_size": 128.0},
        TypeError,
        r"block_size must be an integer, got 128\.0 of type float",
    ),
    ErrorCase(
        "block_size_bool_4bit",
        "scale_by_adam4bit",
        {"block_size": True},
        TypeError,
        r"block_size must be an integer, got True",
    ),
    ErrorCase(
        "min_quantized_size_negative_4bit",
        "adamw4bit",
        {"learning_rate": 1e-3, "min_quantized_size": -1},
        ValueError,
        r"min_quantized_size must be >= 0, got -1",
    ),
    ErrorCase(
        "stochastic_rounding_4bit_int",
        "adam4bit",
        {"learning_rate": 1e-3, "stochastic_rounding": 1},
        TypeError,
        r"stochastic_rounding must be True or False, got 1",
    ),
    ErrorCase(
        "seed_4bit_too_large",
        "adamw4bit",
        {"learning_rate": 1e-3, "seed": 2**32},
        ValueError,
        r"seed must be in \[0, 2\*\*32\), got 4294967296",
    ),
    ErrorCase(
        "seed_4bit_float",
        "scale_by_adam4bit",
        {"seed": 0.5},
        TypeError,
        r"seed must be an integer, got 0\.5",
    ),
    ErrorCase(
        "b2_one_4bit",
        "adamw4bit",
        {"learning_rate": 1e-3, "b2": 1.0},
        ValueError,
        r"b2 must be in \[0, 1\), got 1\.0",
    ),
    ErrorCase(
        "stochastic_rounding_float32_state",
        "adam",
        {"learning_rate": 1e-3, "stochastic_rounding": True},
        ValueError,
        r"stochastic_rounding applies to 16-bit state only, got mu_dtype=None and nu_dtype=None",
    ),
    ErrorCase(
        "stochastic_rounding_float32_dtypes",
        "nadamw",
        {
            "learning_rate": 1e-3,
            "mu_dtype": jnp.float32,
            "nu_dtype": jnp.float32,
            "stochastic_rounding": True,
        },
        ValueError,
        r"applies to 16-bit state only",
    ),
    ErrorCase(
        "stochastic_rounding_string",
        "adamw",
        {"learning_rate": 1e-3, "mu_dtype": jnp.bfloat16, "stochastic_rounding": "yes"},
        TypeError,
        r"stochastic_rounding must be True or False, got 'yes'",
    ),
    ErrorCase(
        "seed_string",
        "nadam",
        {"learning_rate": 1e-3, "mu_dtype": jnp.bfloat16, "stochastic_rounding": True, "seed": "0"},
        TypeError,
        r"seed must be an integer, got '0' of type str",
    ),
    ErrorCase(
        "seed_float",
        "scale_by_adam",
        {"seed": 1.5},
        TypeError,
        r"seed must be an integer, got 1\.5",
    ),
    ErrorCase(
        "seed_negative",
        "adam",
        {"learning_rate": 1e-3, "seed": -1},
        ValueError,
        r"seed must be in \[0, 2\*\*32\), got -1",
    ),
    ErrorCase(
        "int_params",
        "adam",
        {"learning_rate": 1e-3},
        TypeError,
        r"params\['step'\] has dtype int32; Adam needs float or complex leaves",
        {"w": jnp.ones(2), "step": jnp.zeros((), jnp.int32)},
    ),
    ErrorCase(
        "bool_params",
        "adamax",
        {"learning_rate": 1e-3},
        TypeError,
        r"params\[0\] has dtype bool",
        [jnp.ones(2, bool)],
    ),
    ErrorCase(
        "list_params",
        "adam",
        {"learning_rate": 1e-3},
        TypeError,
        r"params\[0\]\[1\] has dtype int",
        [[1.0, 2]],
    ),
    ErrorCase(
        "grad_shape",
        "adam",
        {"learning_rate": 1e-3},
        ValueError,
        r"Gradient leaf \['w'\] has shape \(3,\), but its parameter has shape \(2,\)",
        {"w": jnp.ones(2)},
        {"w": jnp.ones(3)},
    ),
    ErrorCase(
        "grad_scalar_broadcast",
        "adamw",
        {"learning_rate": 1e-3},
        ValueError,
        r"Gradient leaf \['w'\] has shape \(\), but its parameter has shape \(2, 2\)",
        {"w": jnp.ones((2, 2))},
        {"w": jnp.ones(())},
    ),
    ErrorCase(
        "grad_missing_leaf",
        "adamax",
        {"learning_rate": 1e-3},
        ValueError,
        r"tree structure differs",
        {"w": jnp.ones(2), "b": jnp.ones(1)},
        {"w": jnp.ones(2)},
    ),
    ErrorCase(
        "grad_transposed",
        "amsgrad",
        {"learning_rate": 1e-3},
        ValueError,
        r"has shape \(3, 2\), but its parameter has shape \(2, 3\)",
        [jnp.ones((2, 3))],
        [jnp.ones((3, 2))],
    ),
    ErrorCase(
        "lr_overflows_float32",
        "adam",
        {"learning_rate": 1e300},
        ValueError,
        r"learning_rate must be finite in float32, .* at most 3\.402823e\+38 in magnitude, "
        r"got 1e\+300, which float32 rounds to inf",
    ),
    ErrorCase(
        "lr_nan",
        "nadamw",
        {"learning_rate": float("nan")},
        ValueError,
        r"learning_rate must be finite, got nan",
    ),
    ErrorCase(
        "eps_overflows_float32",
        "adamax",
        {"learning_rate": 1e-3, "eps": 1e39},
        ValueError,
        r"eps must be finite in float32, .*got 1e\+39",
    ),
    ErrorCase(
        "eps_root_overflows_float32",
        "amsgrad",
        {"learning_rate": 1e-3, "eps_root": 1e40},
        ValueError,
        r"eps_root must be finite in float32, .*got 1e\+40",
    ),
    ErrorCase(
        "weight_decay_overflows_float32",
        "adamw8bit",
        {"learning_rate": 1e-3, "weight_decay": 5e38},
        ValueError,
        r"weight_decay must be finite in float32, .*got 5e\+38",
    ),
    ErrorCase(
        "weight_decay_inf",
        "adamaxw",
        {"learning_rate": 1e-3, "weight_decay": float("inf")},
        ValueError,
        r"weight_decay must be finite, got inf",
    ),
]
