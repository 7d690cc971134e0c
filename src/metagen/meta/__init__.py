"""Meta-learners, one file per family; importing this package registers them all."""

from metagen.meta import baselines, context, maml
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner, build_learner
from metagen.meta.baselines import CopySupport, Unconditional
from metagen.meta.context import SetConditioned
from metagen.meta.maml import MAML

__all__ = [
    "MAML", "Adapted", "CopySupport", "GeneratorAdapted", "MetaLearner", "SetConditioned", "Unconditional",
    "baselines", "build_learner", "context", "maml",
]
