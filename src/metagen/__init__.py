"""metagen: meta-generative models that learn a new concept from a few examples and generate more of it."""

from metagen.checkpoint import load_checkpoint, load_learner
from metagen.config import Config, load_config
from metagen.data import ConceptSet, EpisodeSampler, Tasks, fixed_tasks, load_splits, load_support
from metagen.errors import CheckpointError, ConfigError, DataError, MetagenError, TrainingDiverged
from metagen.evaluate import evaluate
from metagen.generators import Generator, build_generator
from metagen.meta import Adapted, MetaLearner, build_learner
from metagen.registry import GENERATORS, LEARNERS
from metagen.train import Trainer, train

__version__ = "0.1.0"

__all__ = [
    "GENERATORS", "LEARNERS", "Adapted", "CheckpointError", "ConceptSet", "Config", "ConfigError", "DataError",
    "EpisodeSampler", "Generator", "MetaLearner", "MetagenError", "Tasks", "Trainer", "TrainingDiverged",
    "build_generator", "build_learner", "evaluate", "fixed_tasks", "load_checkpoint", "load_config",
    "load_learner", "load_splits", "load_support", "train",
]
