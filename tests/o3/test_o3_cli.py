import argparse
import json

from equikit.o3._cli import register


def test_bench_sh_cli_runs_and_writes(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(
        ["bench", "sh", "--lmax", "2", "--n", "500", "--repeats", "2", "--threads", "1", "--out", str(tmp_path)]
    )
    assert args.func(args) == 0
    payload = json.loads((tmp_path / "o3_sh.json").read_text())
    assert payload["env"]["threads"] == 1 and len(payload["rows"]) == 2
    assert {"equikit", "equikit_torch"} <= set(payload["rows"][0]["median_s"])
    assert "| lmax |" in capsys.readouterr().out
