"""adam_optax: the Adam family as optax transforms, exact and hard to misuse."""

from optax import ScaleByAdamState, ScaleByAmsgradState

from adam_optax.aliases import adam, adamax, adamaxw, adamw, amsgrad, nadam, nadamw
from adam_optax.state_sharding import ShardedState, shard_state
from adam_optax.transforms import scale_by_adam, scale_by_adamax, scale_by_amsgrad

__version__ = "0.1.0"

__all__ = [
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ShardedState",
    "adam",
    "adamax",
    "adamaxw",
    "adamw",
    "amsgrad",
    "nadam",
    "nadamw",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "shard_state",
]
