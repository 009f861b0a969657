"""The ``cayley`` CLI, called through register() on a plain ArgumentParser."""

from __future__ import annotations

import argparse
import json

from equikit.groups.cayley import generators_for
from equikit.groups.cayley._cli import register


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="equikit")
    register(parser.add_subparsers(dest="command"))
    return parser


def _python_growth(gens):
    n = len(gens[0])
    seen, layer, sizes = {tuple(range(n))}, [tuple(range(n))], [1]
    while layer:
        nxt = {tuple(s[i] for i in g) for s in layer for g in gens} - seen
        seen |= nxt
        layer = list(nxt)
        if layer:
            sizes.append(len(layer))
    return sizes


def test_growth_command_writes_table_json_and_plot(tmp_path, capsys):
    out = tmp_path / "lrx6.json"
    args = _parser().parse_args(["cayley", "growth", "--generators", "lrx", "--n", "6",
                                 "--out", str(out), "--quiet"])
    assert args.func(args) == 0
    data = json.loads(out.read_text())
    want = _python_growth(generators_for("lrx", 6)[0].tolist())
    assert data["layer_sizes"] == want and data["diameter"] == len(want) - 1
    assert out.with_suffix(".png").stat().st_size > 0
    text = capsys.readouterr().out
    assert f"{len(want) - 1:5d} {want[-1]:12d}" in text


def test_word_and_diameter_commands(capsys):
    parser = _parser()
    args = parser.parse_args(["cayley", "word", "--generators", "pancake", "--n", "5",
                              "--target", "4,3,2,1,0"])
    assert args.func(args) == 0
    assert "length 1: R5" in capsys.readouterr().out
    args = parser.parse_args(["cayley", "diameter", "--generators", "pancake", "--n", "6", "--quiet"])
    assert args.func(args) == 0
    assert capsys.readouterr().out.strip() == "7"


def test_bad_input_gives_exit_code_2(capsys):
    args = _parser().parse_args(["cayley", "growth", "--perm", "1,1,0", "--quiet", "--no-plot"])
    assert args.func(args) == 2
    assert "must be a permutation" in capsys.readouterr().err
