"""Typed run configuration: TOML presets, `--set key=value` overrides, validation with one-line errors.

A config has six sections: `data`, `split`, `generator`, `learner`, `train`, `eval`. The `generator`
and `learner` sections are dispatched by their `name` to the `Config` class that the registered
generator / meta-learner defines, so each family validates its own keys.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator, model_validator

from metagen.errors import ConfigError
from metagen.registry import GENERATORS, LEARNERS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


TEXT_SOURCES = ("fortunes", "tunes")  # data sources whose examples are token sequences


class Strict(BaseModel):
    """Base for config sections: unknown keys are errors, values are validated on assignment too."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class DataConfig(Strict):
    source: Literal["omniglot", "glyphs", "fortunes", "tunes", "fonts"] = "glyphs"
    data_dir: str | None = None  # None: --data-dir, then $METAGEN_DATA_DIR (fortunes: /usr/share/games/fortunes)
    image_size: int = Field(28, ge=8, le=128)
    # Omniglot: add the 90/180/270-degree rotations of each *background* character as new concepts
    # (Santoro et al. 2016). Held-out concepts are never rotated.
    rotations: bool = False
    # Add the left-right mirror image of every background character (and, with rotations, of each rotation)
    # as a new concept: with rotations, the 8 symmetries of the square. Held-out characters are never mirrored.
    mirrors: bool = False
    examples_per_concept: int = Field(20, ge=2, le=200)  # glyphs only: renders per character
    # fortunes (text): tokens per text, its two boundary marks included; longer entries are left out.
    max_len: int = Field(256, ge=8, le=4096)
    min_entries: int = Field(15, ge=2)  # fortunes: concepts with fewer entries (of at most max_len) are left out
    # fortunes: the character vocabulary (ids 3, 4, ... in this order), filled in from the meta-training
    # concepts when a run starts, so a checkpoint encodes text exactly as it was trained.
    vocab: str | None = None

    # tunes (music): transpose every tune so that its key signature has no sharps or flats
    transpose: bool = True

    # fonts: the scripts of the character set (latin and digits on every face; greek and cyrillic where a face
    # has the whole script; or ["hanzi"] alone, the CJK track), the folders searched for .ttf/.otf (and for
    # hanzi .ttc) faces (None: /usr/share/fonts and /usr/local/share/fonts; for hanzi, where `make
    # setup-fonts-cjk` unpacks them), and how many characters (drawn by split.seed from the required scripts) no
    # training typeface shows: the unseen-content split.
    scripts: list[Literal["latin", "digits", "greek", "cyrillic", "hanzi"]] = Field(
        default_factory=lambda: ["latin", "digits", "greek", "cyrillic"])
    font_dirs: list[str] | None = None
    held_out_chars: int = Field(0, ge=0)

    @property
    def is_text(self) -> bool:
        """Token sequences (text or tunes) rather than images."""
        return self.source in TEXT_SOURCES

    @model_validator(mode="after")
    def _text_only(self) -> DataConfig:
        if self.is_text and (self.rotations or self.mirrors):
            raise ValueError("data.rotations and data.mirrors apply to images; set them to false for text")
        if self.source == "fonts" and (self.rotations or self.mirrors):
            raise ValueError("data.rotations and data.mirrors would change which character a glyph is; set them "
                             "to false for fonts")
        return self


class SplitConfig(Strict):
    seed: int = 0
    # Groups (Omniglot alphabets, glyph scripts) held out for evaluation: a count drawn by `seed`,
    # a list of names, or "official" (Omniglot: the images_evaluation alphabets).
    test_groups: int | list[str] | Literal["official"] = 2
    # Fraction of the remaining (background) concepts kept out of meta-training for validation and early
    # stopping: new characters of seen groups, drawn by `seed`. 0 disables validation.
    val_fraction: float = Field(0.0, ge=0, lt=1)

    @field_validator("test_groups")
    @classmethod
    def _positive(cls, v: Any) -> Any:
        if isinstance(v, int) and v < 1:
            raise ValueError("must hold out at least 1 group")
        if isinstance(v, list) and not v:
            raise ValueError("empty list: name at least one group to hold out")
        return v


class GeneratorConfig(Strict):
    name: str


class LearnerConfig(Strict):
    name: str


class TrainConfig(Strict):
    steps: int = Field(2000, ge=1)
    meta_batch: int = Field(16, ge=1)
    shots: tuple[int, int] = (1, 10)  # (min, max): each meta-batch draws its K uniformly in this range
    queries: int = Field(5, ge=1)
    optimizer: Literal["adam", "sgd"] = "adam"  # outer optimizer; plain SGD makes Reptile's lr its step size eps
    lr: float = Field(1e-3, gt=0)
    betas: tuple[float, float] = (0.9, 0.999)  # Adam's; GANs are usually trained with (0.0, 0.9) or (0.5, 0.999)
    # Per-parameter learning rates: {regex over parameter names: multiplier of lr}; the first pattern that
    # matches a name wins, unmatched parameters use lr. E.g. {'\.disc\.' = 4.0}: a GAN's discriminator at
    # 4x the generator's rate (TTUR, Heusel et al. 2017).
    lr_scale: dict[str, float] = Field(default_factory=dict)
    grad_clip: float = Field(10.0, ge=0)  # 0 disables clipping
    seed: int = 0
    device: str = "cpu"  # cpu, cuda, cuda:N, mps or auto
    log_every: int = Field(25, ge=1)
    ckpt_every: int = Field(250, ge=1)
    # Score the validation tasks every this many steps and keep the best weights in best.safetensors
    # (needs split.val_fraction > 0); 0 disables it.
    val_every: int = Field(0, ge=0)
    # Stop when this many validations in a row bring no better validation loss; 0 trains all `steps`.
    patience: int = Field(0, ge=0)
    # Stop after this many wall-clock minutes of this invocation (a checkpoint is saved); None: no time limit.
    # Runs compared "at equal CPU minutes" use it.
    max_minutes: float | None = Field(None, gt=0)

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in v):
            raise ValueError("both must be in [0, 1)")
        return v

    @field_validator("lr_scale")
    @classmethod
    def _lr_scale(cls, v: dict[str, float]) -> dict[str, float]:
        for pattern, scale in v.items():
            try:
                re.compile(pattern)
            except re.error as e:
                raise ValueError(f"'{pattern}' is not a regular expression ({e})") from None
            if not scale > 0:
                raise ValueError(f"the multiplier of '{pattern}' must be > 0, got {scale}")
        return v

    @field_validator("shots")
    @classmethod
    def _shots(cls, v: tuple[int, int]) -> tuple[int, int]:
        if v[0] < 1 or v[1] < v[0]:
            raise ValueError("must be [min, max] with 1 <= min <= max")
        return v

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        kind = v.split(":")[0]
        if kind not in ("cpu", "cuda", "mps", "auto") or (":" in v and not v.split(":")[1].isdigit()):
            raise ValueError("must be cpu, cuda, cuda:N, mps or auto")
        return v


class EvalConfig(Strict):
    shots: list[int] = Field(default_factory=lambda: [1, 5, 10])
    queries: int = Field(10, ge=1)  # fixed query examples per held-out concept, the same for every shot
    iw_samples: int = Field(1000, ge=1)  # importance samples of the IWAE bound
    max_tasks: int | None = Field(None, ge=1)  # None: every held-out concept
    episodes: int = Field(1, ge=1)  # tasks per concept (independent support/query draws)
    seed: int = 0
    # Few-shot classification by likelihood (metagen.metrics.classify): N of the N-way episodes to score
    # (empty: none), their shots, queries per concept, how many episodes, and the VAE bound's samples there.
    classify: list[int] = Field(default_factory=list)
    classify_shots: int = Field(1, ge=1)
    classify_queries: int = Field(1, ge=1)
    classify_episodes: int = Field(100, ge=1)
    classify_iw_samples: int = Field(20, ge=1)

    @field_validator("classify")
    @classmethod
    def _ways(cls, v: list[int]) -> list[int]:
        if any(n < 2 for n in v):
            raise ValueError("N-way classification needs N >= 2")
        return sorted(set(v))

    @field_validator("shots")
    @classmethod
    def _shots(cls, v: list[int]) -> list[int]:
        if not v or min(v) < 0 or max(v) < 1:
            raise ValueError("must be a non-empty list of shot counts >= 0 (0: no adaptation), one of them >= 1")
        return sorted(set(v))


class Config(Strict):
    data: DataConfig = Field(default_factory=DataConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)
    generator: SerializeAsAny[GeneratorConfig] = Field(default_factory=lambda: _section(GENERATORS, "vae"))
    learner: SerializeAsAny[LearnerConfig] = Field(default_factory=lambda: _section(LEARNERS, "context"))
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @field_validator("generator", mode="before")
    @classmethod
    def _generator(cls, v: Any) -> Any:
        return _dispatch(GENERATORS, v)

    @field_validator("learner", mode="before")
    @classmethod
    def _learner(cls, v: Any) -> Any:
        return _dispatch(LEARNERS, v)

    @model_validator(mode="after")
    def _pair(self) -> Config:
        """The generator family and the learner must make sense together (docs/ARCHITECTURE.md's matrix)."""
        generator = GENERATORS.get(self.generator.name)
        text_data = self.data.is_text
        if (generator.modality == "text") != text_data:
            kinds = "lstm or transformer" if text_data else "vae, pixelcnn, flow, diffusion or gan"
            raise ValueError(f"generator '{self.generator.name}' models {generator.modality}, data.source "
                             f"'{self.data.source}' is {'text' if text_data else 'images'}: use generator.name = "
                             f"{kinds}")
        if generator.modality == "glyph pairs" and self.data.source != "fonts":
            raise ValueError(f"generator '{self.generator.name}' draws a character in a typeface and needs "
                             "data.source = 'fonts'")
        problem = LEARNERS.get(self.learner.name).incompatible(generator)
        if problem:
            raise ValueError(problem)
        return self

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)


def _ensure_registered() -> None:
    import metagen.generators
    import metagen.meta  # noqa: F401  (fills LEARNERS)


def _section(registry: Any, name: str) -> BaseModel:
    _ensure_registered()
    return registry.get(name).Config(name=name)


def _dispatch(registry: Any, v: Any) -> Any:
    if isinstance(v, BaseModel):
        return v
    if not isinstance(v, dict) or "name" not in v:
        raise ValueError(f"needs a 'name', one of: {', '.join(registry.names())}")
    _ensure_registered()
    if v["name"] not in registry:
        raise ValueError(f"unknown {registry.kind} '{v['name']}'; choose one of: {', '.join(registry.names())}")
    return registry.get(v["name"]).Config.model_validate(v)


def _section_keys(raw: dict[str, Any], section: str) -> list[str]:
    """The keys a config section accepts (for generator/learner: those of the family it names)."""
    if section in ("generator", "learner"):
        name = raw.get(section, {}).get("name") if isinstance(raw.get(section), dict) else None
        registry = GENERATORS if section == "generator" else LEARNERS
        if name not in registry:
            return []
        model = registry.get(name).Config
    else:
        model = Config.model_fields[section].annotation
    return list(model.model_fields)


def _one_line(err: ValidationError, source: str, raw: dict[str, Any]) -> str:
    by_loc: dict[str, list[dict[str, Any]]] = {}
    for e in err.errors():
        # Keep field names; drop pydantic's validator and union-branch names ("int", "list[str]", ...).
        fields = [str(p) for p in e["loc"] if str(p).isidentifier() or isinstance(p, int)]
        fields = [f for f in fields if f not in ("int", "str", "float", "bool", "list", "tuple")]
        by_loc.setdefault(".".join(fields), []).append(e)
    parts = []
    for loc, errs in by_loc.items():
        if errs[0]["type"] == "extra_forbidden":
            section = loc.split(".")[0]
            keys = _section_keys(raw, section) if section in Config.model_fields else list(Config.model_fields)
            known = f" ({section} takes: {', '.join(keys)})" if keys and "." in loc else ""
            parts.append(f"unknown key '{loc}'{known}")
            continue
        msgs = [e["msg"].removeprefix("Value error, ") for e in errs]
        if not loc:  # a check across sections
            parts.append(msgs[0])
            continue
        if len(msgs) > 1:  # one failure per branch of a union type
            msgs = ["should be " + " or ".join(m.removeprefix("Input should be ").split(",")[0] for m in msgs)]
        parts.append(f"{loc} = {errs[0].get('input')!r}: {msgs[0]}")
    return f"bad config ({source}): " + "; ".join(parts)


def presets(package: str = "metagen.configs") -> list[str]:
    """Names of the TOML presets packaged in `package` (training presets; metagen.configs.bench: bench presets)."""
    return sorted(p.name.removesuffix(".toml") for p in resources.files(package).iterdir()
                  if p.name.endswith(".toml"))


def read_toml(name_or_path: str, package: str = "metagen.configs", kind: str = "config") -> tuple[str, dict[str, Any]]:
    """(name, parsed TOML) of a file path or of a preset packaged in `package`; one-line errors name `kind`."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            known = ", ".join(presets(package))
            raise ConfigError(f"{kind} file '{path}' not found; give a path or a preset ({known})")
        text, name = path.read_text(), path.stem
    else:
        res = resources.files(package) / f"{name_or_path}.toml"
        if not res.is_file():
            known = ", ".join(presets(package))
            raise ConfigError(f"no {kind} file or preset named '{name_or_path}'; presets: {known}")
        text, name = res.read_text(), name_or_path
    try:
        return name, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{kind} '{name_or_path}' is not valid TOML: {e}") from None


def _read_toml(name_or_path: str, seen: tuple[str, ...] = ()) -> dict[str, Any]:
    if name_or_path in seen:
        raise ConfigError(f"config '{name_or_path}' extends itself")
    _, raw = read_toml(name_or_path)
    base = raw.pop("extends", None)
    if base is None:
        return raw
    return merge(_read_toml(base, (*seen, name_or_path)), raw)


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge `override` into `base`. A `generator`/`learner` section whose `name` changes is replaced,
    not merged, since the old family's keys mean nothing to the new one."""
    out = copy.deepcopy(base)
    for key, val in override.items():
        old = out.get(key)
        if isinstance(val, dict) and isinstance(old, dict):
            renamed = key in ("generator", "learner") and "name" in val and val["name"] != old.get("name")
            out[key] = copy.deepcopy(val) if renamed else merge(old, val)
        else:
            out[key] = copy.deepcopy(val)
    return out


def parse_override(item: str) -> dict[str, Any]:
    """`train.lr=3e-4` -> {"train": {"lr": 3e-4}}; the value is read as TOML, else as a plain string."""
    if "=" not in item:
        raise ConfigError(f"override '{item}' must look like section.key=value, e.g. train.steps=500")
    key, value = item.split("=", 1)
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value
    out: dict[str, Any] = {}
    node = out
    parts = key.strip().split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = parsed
    return out


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_one_line(e, source, raw)) from None


def load_config(name_or_path: str, overrides: list[str] | None = None) -> Config:
    """Load a preset name or TOML path, apply `section.key=value` overrides, validate."""
    raw = _read_toml(name_or_path)
    for item in overrides or []:
        raw = merge(raw, parse_override(item))
    return from_dict(raw, source=name_or_path)


def load_config_json(path: Path) -> Config:
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ConfigError(f"cannot read config '{path}': {e}") from None
    return from_dict(raw, source=str(path))
