"""The benchmarks' one loop for running a measurement in this tree and a ``--baseline`` tree:
each run a child process in its tree's directory with that tree on ``PYTHONPATH``, its figure
read from its last line, the trees taken in turn (reversed every other round when they
alternate, so that no tree always goes first)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from bench.common import against_lines, against_trees, in_tree, in_turn

#: appends where it ran to the file ``$RUNS_LOG`` names, prints a line of noise, then its figure
CHILD = ("import os, sys\n"
         "with open(os.environ['RUNS_LOG'], 'a') as log:\n"
         "    log.write(os.path.basename(os.getcwd()) + '\\n')\n"
         "print('warming up')\n"
         "print(os.getcwd(), os.environ['PYTHONPATH'], os.environ.get('BENCH_EXTRA', '-'))\n")


@pytest.fixture
def trees(tmp_path: Path) -> list[tuple[str, Path]]:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    return [("baseline", tmp_path / "old"), ("this tree", tmp_path / "new")]


def runs(log: Path) -> list[str]:
    return log.read_text().split()


def test_each_tree_runs_in_its_directory_with_it_on_pythonpath(trees: list[tuple[str, Path]],
                                                                tmp_path: Path) -> None:
    env = {**os.environ, "RUNS_LOG": str(tmp_path / "runs.log"), "BENCH_EXTRA": "kept",
           "PYTHONPATH": "/somewhere/else"}
    got = against_trees(trees, 2, [sys.executable, "-c", CHILD], str.split, env=env)
    old, new = str(trees[0][1].resolve()), str(trees[1][1].resolve())
    # the last line is the figure; the tree replaces the caller's PYTHONPATH; the rest of env is passed on
    assert got == {"baseline": [[old, old, "kept"]] * 2, "this tree": [[new, new, "kept"]] * 2}


def test_trees_run_in_the_order_given_every_round(trees: list[tuple[str, Path]], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    against_trees(trees, 3, [sys.executable, "-c", CHILD], str)
    assert runs(tmp_path / "runs.log") == ["old", "new"] * 3


def test_alternating_trees_swap_who_goes_first_each_round(trees: list[tuple[str, Path]], tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    seen: list[tuple[int, str, str]] = []
    got = against_trees(trees, 3, [sys.executable, "-c", CHILD], lambda line: Path(line.split()[0]).name,
                        alternate=True, each=lambda r, name, figure: seen.append((r, name, figure)))
    assert runs(tmp_path / "runs.log") == ["old", "new", "new", "old", "old", "new"]
    # ``each`` hears of every run as it ends, with its round (from 0), tree name and figure
    assert seen == [(0, "baseline", "old"), (0, "this tree", "new"), (1, "this tree", "new"),
                    (1, "baseline", "old"), (2, "baseline", "old"), (2, "this tree", "new")]
    assert got == {"baseline": ["old"] * 3, "this tree": ["new"] * 3}


def test_one_tree_alone_is_measured_too(trees: list[tuple[str, Path]], tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNS_LOG", str(tmp_path / "runs.log"))
    got = against_trees(trees[1:], 2, [sys.executable, "-c", CHILD], len, alternate=True)
    assert list(got) == ["this tree"] and len(got["this tree"]) == 2
    assert runs(tmp_path / "runs.log") == ["new", "new"]


def test_a_child_that_prints_nothing_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"printed nothing in .*: its last line is the figure"):
        in_tree(tmp_path, [sys.executable, "-c", "pass"])


def test_in_turn_reverses_the_order_every_other_round() -> None:
    assert [list(in_turn(["a", "b", "c"], r)) for r in range(3)] == [["a", "b", "c"], ["c", "b", "a"],
                                                                      ["a", "b", "c"]]


def test_the_report_gives_each_trees_median_and_rounds_then_the_median_of_the_rounds_ratios() -> None:
    ab = {"baseline": [300.0, 120.0, 330.0], "this tree": [100.0, 100.0, 300.0]}
    # ratios 3.0, 1.2, 1.1: their median 1.2, not the medians' ratio (300 / 100)
    assert against_lines(ab, "us CPU per pair") == [
        "baseline     300.0 us CPU per pair (rounds: 300.0, 120.0, 330.0)",
        "this tree    100.0 us CPU per pair (rounds: 100.0, 100.0, 300.0)",
        "baseline / this tree: x1.20 (median of the rounds' ratios)",
    ]
