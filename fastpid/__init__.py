"""FastPID: exact, certified, batched and differentiable BROJA partial information decomposition."""
from .backends import available as available_backends
from .information import co_information, mutual_information
from .joints import all_reduce_joint, joint_from_probs, joint_from_samples
from .pid import PIDResult, pid

__all__ = ["pid", "PIDResult", "mutual_information", "co_information", "available_backends",
           "joint_from_samples", "joint_from_probs", "all_reduce_joint"]
__version__ = "0.1.0"
