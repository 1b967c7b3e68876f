"""Test-session setup: 8 host devices for the sharding tests, and Keras on JAX.

Both must be set before JAX or Keras is first imported.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("KERAS_BACKEND", "jax")
