"""Ops a compiled program executes, counted from its optimized HLO.

On an accelerator each op of the optimized HLO (a fusion, a dot, a copy, ...) is a kernel
launch, so ops per generated frame is what bounds sampling speed at small batches. This
counts them statically: every instruction of a computation is one op (parameters, tuples,
constants and bitcasts are free), a fusion is one op whatever it fuses, a while loop
costs its trip count times its body and condition (XLA records known trip counts), a
conditional its most expensive branch. A loop whose trip count depends on the data (the
NADE sampler's loop over the notes of a frame) is reported apart, per iteration.

    ops = count(compiled.as_text())      # Ops(total=..., data_dependent_loops=[...])
"""

from __future__ import annotations

import dataclasses
import json
import re

FREE = {"parameter", "get-tuple-element", "tuple", "constant", "bitcast", "after-all"}
_HEADER = re.compile(r"^(?:ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")


@dataclasses.dataclass
class Ops:
  """total: ops executed, loops with known trip counts unrolled in the count;
  data_dependent_loops: for each loop of unknown trip count, its ops per iteration."""

  total: int
  data_dependent_loops: list[int]


def _computations(text: str) -> tuple[dict[str, list[str]], str]:
  comps, current, entry = {}, None, None
  for line in text.splitlines():
    if line and not line[0].isspace():
      match = _HEADER.match(line)
      if match:
        current = match.group(1)
        comps[current] = []
        if line.startswith("ENTRY"):
          entry = current
      elif line.startswith("}"):
        current = None
      continue
    if current is not None and " = " in line:
      comps[current].append(line.strip())
  return comps, entry


def _opcode(instruction: str) -> str:
  rhs = instruction.split(" = ", 1)[1]
  if rhs.startswith("("):  # a tuple type: skip to its closing parenthesis
    depth = 0
    for i, ch in enumerate(rhs):
      depth += ch == "("
      depth -= ch == ")"
      if depth == 0:
        rhs = rhs[i + 1:]
        break
  else:
    rhs = rhs.split(" ", 1)[1] if " " in rhs else rhs
  return rhs.strip().split("(", 1)[0]


def _attribute(instruction: str, name: str) -> str | None:
  match = re.search(name + r"=%?([\w.\-]+)", instruction)
  return match.group(1) if match else None


def _trip_count(instruction: str) -> int | None:
  match = re.search(r'"known_trip_count":\{"n":"(\d+)"\}', instruction)
  return int(match.group(1)) if match else None


def count(text: str) -> Ops:
  """Ops the entry computation of an optimized HLO module executes."""
  comps, entry = _computations(text)
  unknown: list[int] = []
  memo: dict[str, int] = {}

  def ops_of(name: str) -> int:
    if name in memo:
      return memo[name]
    total = 0
    for instruction in comps.get(name, []):
      opcode = _opcode(instruction)
      if opcode in FREE:
        continue
      if opcode == "while":
        body = ops_of(_attribute(instruction, "body")) + ops_of(
            _attribute(instruction, "condition"))
        trips = _trip_count(instruction)
        if trips is None:
          unknown.append(body)
          trips = 1
        total += trips * body
      elif opcode == "call":
        total += ops_of(_attribute(instruction, "to_apply"))
      elif opcode == "conditional":
        branches = re.findall(r"%([\w.\-]+)", instruction.split("branch_computations=", 1)[1]
                              .split("}", 1)[0]) if "branch_computations=" in instruction else [
                                  _attribute(instruction, "true_computation"),
                                  _attribute(instruction, "false_computation")]
        total += 1 + max(ops_of(b) for b in branches if b)
      else:
        total += 1
    memo[name] = total
    return total

  return Ops(total=ops_of(entry), data_dependent_loops=unknown)


def per_frame(compile_for_length, short: int, long: int) -> dict:
  """Ops per generated frame: the growth of the count from `short` to `long` frames.

  compile_for_length(n) returns the compiled sampler of n frames. Returns {'ops_per_frame',
  'data_dependent_loop_ops' (per iteration of each loop of unknown trip count, e.g. the
  NADE's loop over a frame's notes, which runs once per sampled note plus once)}.
  """
  a, b = count(compile_for_length(short).as_text()), count(compile_for_length(long).as_text())
  return {"ops_per_frame": (b.total - a.total) / (long - short),
          "data_dependent_loop_ops": sorted(set(b.data_dependent_loops))}


if __name__ == "__main__":
  import sys  # pylint: disable=g-import-not-at-top
  print(json.dumps(dataclasses.asdict(count(open(sys.argv[1]).read()))))
