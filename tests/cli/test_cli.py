"""``equikit check`` and ``equikit demo`` from the command line."""

import json

import pytest
import torch

from equikit.cli.main import main


def test_check_zoo_entry_json(capsys):
    assert main(["check", "zoo:centroid", "--json", "--samples", "4"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["dtype"] for r in rows] == ["float32", "float64"]
    assert all(r["passed"] and r["kind"] == "equivariance" for r in rows)


def test_check_flags_a_control(capsys):
    assert main(["check", "zoo:flat-mlp", "--samples", "4"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "invariance" in out


def test_check_user_callable_by_path(capsys):
    code = main(["check", "equikit.check.zoo:DistanceInvariant", "--action", "e-perm",
                 "--input", "4x12x3", "--samples", "4"])
    assert code == 0 and "PASS" in capsys.readouterr().out
    code = main(["check", "equikit.check.zoo:FlatMLP", "--group", "e-perm", "--input", "4x12x3",
                 "--samples", "4", "--dtype", "float64"])
    assert code == 1


def test_check_input_from_file(tmp_path, capsys):
    path = tmp_path / "x.pt"
    torch.save(torch.randn(3, 12, 3), path)
    code = main(["check", "equikit.check.zoo:WeightedCentroid", "--action", "e", "--equivariant",
                 "--input", str(path), "--samples", "3"])
    assert code == 0


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["check", "nocolon"], "package.module:callable"),
        (["check", "equikit.check.zoo:Nope", "--action", "e", "--input", "2x3"], "no attribute"),
        (["check", "equikit.check.zoo:FlatMLP"], "--action and --input"),
        (["check", "equikit.check.zoo:FlatMLP", "--action", "e", "--input", "axb"], "shape"),
        (["check", "zoo:centroid", "--dtype", "float16"], "dtype"),
    ],
)
def test_check_bad_arguments(argv, match):
    with pytest.raises(SystemExit, match=match):
        main(argv)


def test_check_errors_from_the_library_are_reported_without_traceback(capsys):
    assert main(["check", "zoo:nothing"]) == 2
    assert "unknown entry" in capsys.readouterr().err
    assert main(["check", "equikit.check.zoo:WeightedCentroid", "--group", "e3", "--input", "4x12x2"]) == 2
    assert "R^3" in capsys.readouterr().err


def test_demo_prints_the_audit(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "22/22 verdicts as expected" in out and "egnn" in out and "margin" in out and "zero-pad-conv" in out
    assert "gin+node-ids" in out and "potential+x-comp" in out
    assert "harmonics+wrong-parity" in out and "mlp-weight-space+unit0" in out and "flat-mlp+se3-frame" in out
