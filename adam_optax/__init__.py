"""adam_optax: the Adam family as optax transforms, exact and hard to misuse."""

from optax import ScaleByAdamState, ScaleByAmsgradState

from adam_optax.aliases import (
    adam,
    adam4bit,
    adam8bit,
    adamax,
    adamaxw,
    adamw,
    adamw4bit,
    adamw8bit,
    amsgrad,
    nadam,
    nadamw,
)
from adam_optax.master_weights import MasterWeightsState, master_params, master_weights
from adam_optax.offload import offload_state
from adam_optax.state_sharding import ShardedState, shard_state
from adam_optax.storage import QuantizedArray, QuantizedTree, dequantize
from adam_optax.transforms import (
    scale_by_adam,
    scale_by_adam4bit,
    scale_by_adam8bit,
    scale_by_adamax,
    scale_by_amsgrad,
)

__version__ = "0.1.0"

__all__ = [
    "MasterWeightsState",
    "QuantizedArray",
    "QuantizedTree",
    "ScaleByAdamState",
    "ScaleByAmsgradState",
    "ShardedState",
    "adam",
    "adam4bit",
    "adam8bit",
    "adamax",
    "adamaxw",
    "adamw",
    "adamw4bit",
    "adamw8bit",
    "amsgrad",
    "dequantize",
    "master_params",
    "master_weights",
    "nadam",
    "nadamw",
    "offload_state",
    "scale_by_adam",
    "scale_by_adam4bit",
    "scale_by_adam8bit",
    "scale_by_adamax",
    "scale_by_amsgrad",
    "shard_state",
]
