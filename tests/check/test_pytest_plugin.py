"""The pytest11 plugin gives users a one-line equivariance test."""

pytest_plugins = ["pytester"]

TEST_FILE = """
import torch
from equikit.groups import E, PointCloud

def test_centroid_is_equivariant(equikit_check):
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    report = equikit_check(lambda p: p.mean(-2), x, PointCloud(E(3)), PointCloud(E(3)))
    assert report.n_elements == {n}

def test_broken_model_fails(equikit_check):
    x = torch.randn(4, 10, 3, dtype=torch.float64)
    equikit_check(lambda p: p.mean(-2) + 1, x, PointCloud(E(3)), PointCloud(E(3)))
"""


def test_plugin_fixture_passes_and_fails(pytester):
    pytester.makepyfile(TEST_FILE.format(n=16))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["*is not equivariant under E(3)*", "*worst element*"])


def test_plugin_sample_option(pytester):
    pytester.makepyfile(TEST_FILE.format(n=5))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--equikit-samples", "5")
    result.assert_outcomes(passed=1, failed=1)
