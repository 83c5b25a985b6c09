"""Settings defined once: frozen dataclasses whose fields carry their help, checks and resume rule.

Every setting of the library is one field of a config dataclass (`ModelConfig`,
`DataConfig`, `TrainConfig`, `SampleSettings`, ...) written with `setting(...)`:

    @dataclasses.dataclass(frozen=True)
    class TrainConfig(Settings):
      batch_size: int = setting(64, "Global batch size (all devices, all hosts).",
                                check=positive)

The programs generate their absl flags from those fields (`define_flags`), read them
back (`from_flags`), and a stored config merges with the flags a user gives again
(`merge`), so a new setting is one line. Validation lives with the field: the type,
`choices` and `check` are enforced in `__post_init__`, and every error names the flag.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Callable, Iterable

from absl import flags

# What a stored run does with a flag given again on resume (see `merge`).
FIXED = "fixed"  # part of what was trained: a different value is a contradiction
OVERRIDE = "override"  # may change on resume (with a warning): how to train, not what
FREE = "free"  # logistics (where to cache, how many workers): never a conflict
RESUME_RULES = (FIXED, OVERRIDE, FREE)

Check = Callable[[Any], "str | None"]  # returns what is wrong, or None


def positive(value) -> str | None:
  return None if value > 0 else "must be positive"


def non_negative(value) -> str | None:
  return None if value >= 0 else "must be >= 0"


def at_least(low) -> Check:
  return lambda value: None if value >= low else f"must be at least {low}"


def in_range(low, high, *, high_open: bool = False) -> Check:
  """low <= value <= high (value < high with high_open)."""

  def check(value):
    ok = low <= value < high if high_open else low <= value <= high
    return None if ok else f"must be in [{low}, {high}{')' if high_open else ']'}"

  return check


def setting(default: Any = dataclasses.MISSING, help: str = "", *,  # pylint: disable=redefined-builtin
            choices: Iterable[str] | None = None, check: Check | None = None,
            default_factory: Callable[[], Any] | None = None, flag: bool = True,
            resume: str = FIXED, flag_default_help: str | None = None,
            stored_default: Any = dataclasses.MISSING) -> Any:
  """A dataclass field that is also a setting.

  Args:
    default: the default value.
    help: the flag's help text (and the field's documentation).
    choices: the allowed values of a string setting (an enum flag).
    check: returns what is wrong with a value (e.g. `positive`), or None.
    default_factory: for defaults computed at run time (the flag's default is then
      None, meaning "the computed default"; `flag_default_help` says what it is).
    flag: False for fields that are not command-line settings (derived values).
    resume: FIXED, OVERRIDE or FREE, see `merge`.
    flag_default_help: for default_factory fields, how the help names the default.
    stored_default: the value a stored config that lacks the field meant (the default of
      the version that wrote it), where the default has changed since; else the default.
  """
  if resume not in RESUME_RULES:
    raise ValueError(f"resume must be one of {RESUME_RULES}, got {resume!r}")
  metadata = {"help": help, "choices": tuple(choices) if choices else None, "check": check,
              "flag": flag, "resume": resume, "flag_default_help": flag_default_help,
              "stored_default": stored_default}
  if default_factory is not None:
    return dataclasses.field(default_factory=default_factory, metadata=metadata)
  return dataclasses.field(default=default, metadata=metadata)


def _hints(cls) -> dict[str, Any]:
  return typing.get_type_hints(cls)


def _base_type(hint) -> tuple[type, bool]:
  """(int | float | bool | str, optional) of a field's annotation."""
  optional = False
  if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = len(args) < len(typing.get_args(hint))
    hint = args[0]
  if hint not in (int, float, bool, str):
    raise TypeError(f"unsupported setting type {hint!r}")
  return hint, optional


def _coerce(name: str, value, kind: type, optional: bool):
  """The value as its field's type, or a ValueError naming the flag."""
  if value is None:
    if optional:
      return None
    raise ValueError(f"--{name} must be set")
  if kind is bool:
    if isinstance(value, bool):
      return value
  elif kind is int:
    if isinstance(value, int) and not isinstance(value, bool):
      return value
    if isinstance(value, float) and value.is_integer():
      return int(value)
  elif kind is float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
      if not math.isfinite(value):
        raise ValueError(f"--{name} must be a finite number, got {value!r}")
      return float(value)
  elif isinstance(value, str):
    return value
  raise ValueError(f"--{name} must be {'an' if kind is int else 'a'} {kind.__name__}, "
                   f"got {value!r}")


class Settings:
  """Mixin for frozen config dataclasses made of `setting` fields.

  `__post_init__` coerces each value to its field's type and applies the field's
  `choices` and `check`; subclasses with checks across fields call
  `super().__post_init__()` first.
  """

  def __post_init__(self):
    hints = _hints(type(self))
    for field in dataclasses.fields(self):
      kind, optional = _base_type(hints[field.name])
      value = _coerce(field.name, getattr(self, field.name), kind, optional)
      object.__setattr__(self, field.name, value)
      if value is None:
        continue
      choices = field.metadata.get("choices")
      if choices and value not in choices:
        raise ValueError(f"--{field.name} must be one of {', '.join(choices)}, got {value!r}")
      check = field.metadata.get("check")
      problem = check(value) if check else None
      if problem:
        raise ValueError(f"--{field.name} {problem}, got {value!r}")

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: dict, *, where: str = "config"):
    """Builds from stored values; missing fields (older files) take the value they meant
    then: `stored_default` where the default has changed since, else the default."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = dict({f.name: f.metadata["stored_default"] for f in dataclasses.fields(cls)
                   if f.metadata.get("stored_default", dataclasses.MISSING)
                   is not dataclasses.MISSING and f.name not in values}, **values)
    unknown = sorted(set(values) - names)
    if unknown:
      raise ValueError(f"{where}: unknown {cls.__name__} settings {', '.join(unknown)} "
                       "(written by a newer version?)")
    return cls(**values)


def flag_fields(cls) -> list[dataclasses.Field]:
  return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", False)]


def define_flags(cls, flag_values: flags.FlagValues = flags.FLAGS,
                 module_name: str | None = None) -> None:
  """Defines one absl flag per setting of `cls` (a name already defined is left alone)."""
  hints = _hints(cls)
  for field in flag_fields(cls):
    if field.name in flag_values:
      continue
    kind, _ = _base_type(hints[field.name])
    meta = field.metadata
    has_default = field.default is not dataclasses.MISSING
    default = field.default if has_default else None
    help_text = meta["help"]
    if not has_default and meta.get("flag_default_help"):
      help_text += f" (default: {meta['flag_default_help']})"
    kwargs = {"flag_values": flag_values}
    if module_name:
      kwargs["module_name"] = module_name
    if meta.get("choices"):
      flags.DEFINE_enum(field.name, default, list(meta["choices"]), help_text, **kwargs)
    elif kind is bool:
      flags.DEFINE_boolean(field.name, default, help_text, **kwargs)
    elif kind is int:
      flags.DEFINE_integer(field.name, default, help_text, **kwargs)
    elif kind is float:
      flags.DEFINE_float(field.name, default, help_text, **kwargs)
    else:
      flags.DEFINE_string(field.name, default, help_text, **kwargs)


def from_flags(cls, flag_values: flags.FlagValues = flags.FLAGS, **fixed):
  """The `cls` the flags describe; `fixed` values (derived fields) are passed as they are."""
  values = {}
  for field in flag_fields(cls):
    if field.name in fixed or field.name not in flag_values:
      continue
    value = flag_values[field.name].value
    if value is None and field.default is dataclasses.MISSING:
      continue  # default_factory: the computed default
    values[field.name] = value
  return cls(**values, **fixed)


def given(flag_values: flags.FlagValues, name: str) -> bool:
  """True when the user set --name on the command line (or in a flagfile)."""
  return name in flag_values and flag_values[name].present


@dataclasses.dataclass(frozen=True)
class Merged:
  """What `merge` decided: the settings, and what the user should hear about it."""

  value: Any
  conflicts: tuple[str, ...]  # "--name=new (the run has old)"
  overrides: tuple[str, ...]  # "--name=new overrides old"


def merge(stored, fresh, is_given: Callable[[str], bool]) -> Merged:
  """Settings for a resumed run: the stored ones, except flags given again.

  A given flag whose value differs from the stored one is, by its field's rule,
  a conflict (FIXED: the run trained something else), an override reported to the
  user (OVERRIDE), or taken silently (FREE).
  """
  values, conflicts, overrides = {}, [], []
  for field in dataclasses.fields(stored):
    old, new = getattr(stored, field.name), getattr(fresh, field.name)
    values[field.name] = old
    if not field.metadata.get("flag") or not is_given(field.name) or old == new:
      continue
    rule = field.metadata.get("resume", FIXED)
    if rule == FIXED:
      conflicts.append(f"--{field.name}={new} (the run has {old})")
      continue
    values[field.name] = new
    if rule == OVERRIDE:
      overrides.append(f"--{field.name}={new} overrides {old}")
  return Merged(type(stored)(**values), tuple(conflicts), tuple(overrides))
