"""Meta-learners, one file per family; importing this package registers them all."""

from metagen.meta import (
    attention,
    baselines,
    context,
    finetune,
    hyper,
    maml,
    metasgd,
    programs,
    refine,
    reptile,
    spatial,
)
from metagen.meta.attention import SupportAttention
from metagen.meta.base import Adapted, GeneratorAdapted, MetaLearner, build_learner
from metagen.meta.baselines import CopySupport, Unconditional
from metagen.meta.context import SetConditioned
from metagen.meta.finetune import FineTune, Scratch
from metagen.meta.hyper import HyperNetwork
from metagen.meta.maml import MAML
from metagen.meta.metasgd import MetaSGD
from metagen.meta.programs import StrokePrograms
from metagen.meta.refine import RetrieveRefine
from metagen.meta.reptile import Reptile
from metagen.meta.spatial import SpatialContext

__all__ = [
    "MAML", "Adapted", "CopySupport", "FineTune", "GeneratorAdapted", "HyperNetwork", "MetaLearner", "MetaSGD",
    "Reptile", "RetrieveRefine", "Scratch", "SetConditioned", "SpatialContext", "StrokePrograms", "SupportAttention",
    "Unconditional", "attention", "baselines", "build_learner", "context", "finetune", "hyper", "maml", "metasgd",
    "programs", "refine", "reptile", "spatial",
]
