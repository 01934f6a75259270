"""FastPID controller: PID-guided two-stage training of multi-modal models (arXiv 2509.20840).

``TwoStageController`` plugs into any training loop; ``baselines.run_method`` runs it
and the baselines on the late-fusion models of ``models`` with the harness of
``trainer``; ``data`` loads multi-view data; ``experiment`` is the main job."""

from .baselines import METHODS, OGMGE, FixedSchedule, run_method
from .models import MultimodalNet, mlp_net
from .trainer import RunRecord, train
from .two_stage import Decision, Schedule, TwoStageController

__all__ = [
    "Decision",
    "Schedule",
    "TwoStageController",
    "MultimodalNet",
    "mlp_net",
    "train",
    "RunRecord",
    "METHODS",
    "run_method",
    "FixedSchedule",
    "OGMGE",
]
