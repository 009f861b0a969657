"""``equikit bench tp`` on a tiny size: runs, prints the table, writes json/md, validates input."""

import argparse
import json

import pytest

from equikit.tp import _native
from equikit.tp._cli import register_bench


def _parser():
    parser = argparse.ArgumentParser()
    bench = parser.add_subparsers(dest="command").add_parser("bench")
    register_bench(bench.add_subparsers(dest="bench_command"))
    return parser


def test_bench_tp_runs_and_writes(tmp_path, capsys):
    args = _parser().parse_args(["bench", "tp", "--lmax", "1", "--mul", "4", "--rows", "16", "--repeats", "2",
                                 "--out", str(tmp_path)])
    assert args.func(args) == 0
    payload = json.loads((tmp_path / "tp.json").read_text())
    assert payload["threads"] == 1 and payload["repeats"] == 2
    assert [(r["kind"], r["lmax"], r["mul"], r["rows"]) for r in payload["runs"]] == [
        ("channelwise", 1, 4, 16), ("fully_connected", 1, 4, 16)]
    for r in payload["runs"]:
        assert r["native"] == _native.available()
        for phase in ("forward", "forward_backward"):
            assert set(r["times"][phase]) >= {"sparse_cg", "sparse_cg_torch"}
            assert all(t > 0 for t in r["times"][phase].values())
    out = capsys.readouterr().out
    assert "| channelwise | 1 | 4 | 16 | forward |" in out
    assert (tmp_path / "tp.md").read_text() in out


def test_bench_tp_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit):
        _parser().parse_args(["bench", "tp", "--rows", "0"])
    assert "must be an int >= 1, got 0" in capsys.readouterr().err
