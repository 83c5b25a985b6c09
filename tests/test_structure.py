"""The library's shape: no import circles, short functions, each setting defined once."""

import ast
import dataclasses
import os
import pathlib

import pytest
from absl import flags

from musicgen_jax import config as config_lib
from musicgen_jax import evaluate, generate, prepare, sample, sampling, settings, train
from musicgen_jax.data.config import DataConfig
from musicgen_jax.models.config import ModelConfig

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "musicgen_jax"
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, pathlib.Path]:
  out = {}
  for path in PACKAGE.rglob("*.py"):
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
    out[name] = path
  return out


def _imports(name: str, path: pathlib.Path, modules: dict) -> set[str]:
  """Project modules `name` imports anywhere in its file (function-level imports too)."""
  found = set()
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      candidates = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                        ([base] if base else []))
      # `from pkg import mod` imports the module; `from pkg import name`, the package.
      candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names]
    else:
      continue
    for candidate in candidates:
      while candidate and candidate not in modules:
        candidate = candidate.rpartition(".")[0]
      if candidate and candidate != name:
        found.add(candidate)
  return found


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
  """Strongly connected components with more than one module (Tarjan)."""
  index, low, stack, on_stack, out = {}, {}, [], set(), []

  def visit(v):
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in graph.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        out.append(sorted(component))

  for v in graph:
    if v not in index:
      visit(v)
  return out


def test_no_import_circle():
  modules = _modules()
  graph = {name: _imports(name, path, modules) for name, path in modules.items()}
  # A package's __init__ re-exports its submodules; a submodule importing its own
  # package's __init__ would be a circle, and is reported like any other.
  assert _cycles(graph) == []


def test_the_detector_finds_a_circle():
  assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_programs_that_read_a_run_never_import_the_trainer():
  modules = _modules()
  for name in ("musicgen_jax.evaluate", "musicgen_jax.generate", "musicgen_jax.sample",
               "musicgen_jax.workdir"):
    assert "musicgen_jax.train" not in _imports(name, modules[name], modules), name


def test_no_function_over_60_lines():
  long = []
  for path in PACKAGE.rglob("*.py"):
    for node in ast.walk(ast.parse(path.read_text())):
      if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        length = node.end_lineno - node.lineno + 1
        if length > MAX_FUNCTION_LINES:
          long.append(f"{path.relative_to(PACKAGE)}:{node.name} ({length} lines)")
  assert long == []


def _string_literals(path: pathlib.Path) -> set[str]:
  tree = ast.parse(path.read_text())
  docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                and node.body and isinstance(node.body[0], ast.Expr)}
  return {node.value for node in ast.walk(tree)
          if isinstance(node, ast.Constant) and isinstance(node.value, str)
          and id(node) not in docstrings}


def test_model_names_live_in_the_config_and_the_registry_only():
  allowed = {PACKAGE / "models" / "config.py", PACKAGE / "models" / "registry.py"}
  for path in PACKAGE.rglob("*.py"):
    if path not in allowed:
      named = _string_literals(path) & {"rnn", "lstm", "bilstm", "transformer"}
      assert not named, f"{path.relative_to(PACKAGE)} tests model names {named}"


def _program_flags(define) -> set[str]:
  flag_values = flags.FlagValues()
  define(flag_values)
  return set(flag_values)


def _setting_flags(*classes) -> set[str]:
  return {f.name for cls in classes for f in settings.flag_fields(cls)}


def test_every_setting_is_a_generated_flag_and_every_flag_a_setting():
  program = {"workdir", "coordinator_address", "num_processes", "process_id"}
  assert _program_flags(train.define_flags) == _setting_flags(
      ModelConfig, DataConfig, config_lib.TrainConfig) | program
  assert _program_flags(sample.define_flags) == _setting_flags(
      sampling.SampleSettings, generate.GenerateConfig) | {"workdir", "pretrained", "out_dir",
                                                          "overwrite"}
  assert _program_flags(prepare.define_flags) == _setting_flags(DataConfig) | {"stats_json"}
  assert "workdir" in _program_flags(evaluate.define_flags)
  # Derived fields are no flags: the duration grid comes from --steps_per_quarter alone.
  assert "steps_per_quarter" not in _setting_flags(ModelConfig)


@pytest.mark.parametrize("classes", [
    (ModelConfig, DataConfig, config_lib.TrainConfig),  # train
    (sampling.SampleSettings, generate.GenerateConfig),  # sample
])
def test_each_setting_of_a_program_is_defined_once(classes):
  seen = {}
  for cls in classes:
    for field in settings.flag_fields(cls):
      assert field.name not in seen, f"--{field.name} in {seen.get(field.name)} and {cls}"
      seen[field.name] = cls.__name__
      assert field.metadata["help"], field.name


def test_flags_round_trip_into_configs_and_validation_names_the_flag(tmp_path):
  flag_values = flags.FlagValues()
  train.define_flags(flag_values)
  flag_values(["prog", "--model=transformer", "--seq_len=16", "--steps_per_quarter=4",
               "--learning_rate=0.01", "--note_head=nade", f"--cache_dir={tmp_path}"])
  config = config_lib.RunConfig.from_flags(flag_values)
  assert config.model.model == "transformer" and config.model.note_head == "nade"
  assert config.model.steps_per_quarter == config.data.steps_per_quarter == 4
  assert config.train.learning_rate == 0.01
  assert config_lib.RunConfig.from_json(config.to_json()) == config
  with pytest.raises(ValueError, match="--num_heads"):
    config_lib.RunConfig.create(ModelConfig(model="transformer", num_heads=3, hidden_size=32),
                                DataConfig(cache_dir=str(tmp_path)),
                                config_lib.TrainConfig())
  with pytest.raises(ValueError, match="--hidden_size must be positive, got 0"):
    ModelConfig(hidden_size=0)


def test_resume_keeps_what_was_trained_and_takes_how_to_train():
  stored = config_lib.RunConfig.create(ModelConfig(hidden_size=32), DataConfig(cache_dir="/c"),
                                       config_lib.TrainConfig(num_steps=10))
  fresh = config_lib.RunConfig.create(ModelConfig(hidden_size=64), DataConfig(cache_dir="/d"),
                                      config_lib.TrainConfig(num_steps=20, seed=3))
  given = {"num_steps", "cache_dir"}
  merged = config_lib.resume(fresh, stored, lambda name: name in given, "W")
  assert merged.model.hidden_size == 32  # not given: the stored value
  assert merged.train.num_steps == 20 and merged.train.seed == 0
  assert merged.data.cache_dir == "/d"
  with pytest.raises(ValueError, match=r"--hidden_size=64 \(the run has 32\)"):
    config_lib.resume(fresh, stored, lambda name: name in given | {"hidden_size"}, "W")


def test_unknown_stored_settings_are_an_error():
  stored = config_lib.RunConfig.create(ModelConfig(), DataConfig(cache_dir="/c"),
                                       config_lib.TrainConfig()).to_json()
  stored["model"]["wings"] = 2
  with pytest.raises(ValueError, match="unknown ModelConfig settings wings"):
    config_lib.RunConfig.from_json(stored)
  del stored["model"]["wings"]
  del stored["train"]["patience"]  # an older file: missing settings take their defaults
  assert config_lib.RunConfig.from_json(stored).train.patience == 0


def test_settings_are_frozen_hashable_dataclasses():
  for cls in (ModelConfig, DataConfig, config_lib.TrainConfig, sampling.SampleSettings,
              generate.GenerateConfig):
    value = cls() if cls is not DataConfig else cls(cache_dir="/c")
    hash(value)
    assert dataclasses.is_dataclass(value)
    with pytest.raises(dataclasses.FrozenInstanceError):
      setattr(value, dataclasses.fields(cls)[0].name, None)


def test_cli_help_lists_every_flag_a_user_sets():
  import subprocess  # pylint: disable=g-import-not-at-top
  import sys  # pylint: disable=g-import-not-at-top
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  proc = subprocess.run([sys.executable, "-m", "musicgen_jax.train", "--help"],
                        capture_output=True, text=True, timeout=120, env=env)
  for name in ("--dataset", "--data_dir", "--cache_dir", "--seq_len", "--note_head",
               "--learning_rate", "--workdir", "--patience"):
    assert name in proc.stdout, name
  assert "--xla_" not in proc.stdout and "--jax_" not in proc.stdout  # library internals
