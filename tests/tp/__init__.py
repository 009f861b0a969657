"""Tensor-product tests (a package: basenames such as test_cli.py repeat in other folders)."""
