"""The benchmark report chooses by validation and reads ablations against their base."""

from experiments import run_benchmarks


def _row(name, valid, test, model="lstm", head="nade"):
  return {"name": name, "dataset": "jsb", "model": model, "note_head": head,
          "valid": {"nll_notes_88": valid}, "test": {"nll_notes_88": test}}


def test_the_reported_recipe_is_the_best_by_validation_not_by_test():
  rows = [_row("a", valid=5.0, test=5.3), _row("b", valid=5.1, test=4.9)]
  assert run_benchmarks.best_by_validation(rows)[("jsb", "nade", "lstm")]["name"] == "a"
  targets = "\n".join(run_benchmarks._targets(rows))  # pylint: disable=protected-access
  assert "| a | 5.300 | yes |" in targets and "| b |" not in targets


def test_ablations_are_changes_against_the_base_recipe():
  rows = [_row("x_base", valid=5.0, test=5.2), _row("x_no_dropout", valid=5.25, test=5.1)]
  text = "\n".join(run_benchmarks._ablations(rows))  # pylint: disable=protected-access
  assert "| x_no_dropout | 5.250 | +0.250 | 5.100 | -0.100 |" in text
  assert run_benchmarks._ablations(rows[1:]) == []  # pylint: disable=protected-access


def test_a_recipe_digest_ignores_comments_but_not_settings(tmp_path):
  from experiments import runner  # pylint: disable=g-import-not-at-top
  path = tmp_path / "r.flags"
  path.write_text("# measured: 5.1\n--model=lstm\n--seq_len=64\n")
  digest = runner.flagfile_digest(str(path))
  path.write_text("# measured: 4.9 (new note)\n\n--model=lstm\n--seq_len=64\n")
  assert runner.flagfile_digest(str(path)) == digest
  path.write_text("--model=lstm\n--seq_len=32\n")
  assert runner.flagfile_digest(str(path)) != digest
