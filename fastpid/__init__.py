"""FastPID: exact, certified, batched and differentiable BROJA partial information decomposition."""

from .backends import available as available_backends
from .decomposition import ConvergenceError, ConvergenceWarning, PIDResult, pid
from .discretize import Discretizer
from .information import co_information, mutual_information
from .joints import all_reduce_joint, all_reduce_label_count, joint_from_probs, joint_from_samples
from .loss import PIDLoss
from .pairs import pid_pairs
from .resampling import BootstrapResult, PermutationResult, PlugInNoise, bootstrap, permutation_test, plugin_noise

__all__ = [
    "pid",
    "PIDResult",
    "ConvergenceWarning",
    "ConvergenceError",
    "mutual_information",
    "co_information",
    "available_backends",
    "joint_from_samples",
    "joint_from_probs",
    "all_reduce_joint",
    "all_reduce_label_count",
    "bootstrap",
    "BootstrapResult",
    "permutation_test",
    "plugin_noise",
    "PlugInNoise",
    "PermutationResult",
    "pid_pairs",
    "Discretizer",
    "PIDLoss",
]
__version__ = "0.1.0"
