"""The compute version moves with the code that computes the numbers (docs/design.md, "Run
identity"): when a module of ``identity.COMPUTING_CODE`` changes (its syntax tree: docstrings,
comments and formatting do not count), this test fails until the pair below is updated."""

from __future__ import annotations

from lightning_ssl.sweep.identity import COMPUTE_VERSION, compute_fingerprint

# (COMPUTE_VERSION, compute_fingerprint()) as of the last decision. On a failure: if the change can
# change a number a run records, bump identity.COMPUTE_VERSION (stored results become stale and
# `lssl sweep SPEC --rerun-stale` recomputes them); if it cannot (a refactor, a new option at a
# default that keeps the old behaviour, a validation), keep the version. Then record the new pair.
# Last decision (version 2 kept): the L-BFGS probe's budget grows from 500 to 2,000 steps. L-BFGS takes
# the same path whatever its budget, so every probe that converged gives the same number; those that
# ran out of the old budget (the Fashion-MNIST floors) are stale by identity.unconverged_probe.
# Before: the training loader declares Lightning's state_dict (no number moves); DnC's stages keep a
# CollapseMonitor and its record names stage folders relatively (no number moves).
RECORDED = (2, "979797d8f453379855f8f20b6b9135799d74db18")


def test_the_computing_code_and_the_compute_version_move_together() -> None:
    current = (COMPUTE_VERSION, compute_fingerprint())
    assert current == RECORDED, (
        f"the code that computes results changed (fingerprint {current[1]}): bump COMPUTE_VERSION in "
        f"lightning_ssl/sweep/identity.py if numbers can change, then set RECORDED = {current!r} here"
    )


def test_the_fingerprint_ignores_docstrings_and_formatting(tmp_path) -> None:  # noqa: ANN001
    from lightning_ssl.sweep import identity

    (tmp_path / "datamodules").mkdir()
    module = tmp_path / "datamodules" / "m.py"
    module.write_text('def f(x):\n    """Doc."""\n    return x + 1  # one\n')
    first = identity.compute_fingerprint(tmp_path)
    module.write_text('def f(x):\n    """Another doc."""\n\n    return (x + 1)\n')
    assert identity.compute_fingerprint(tmp_path) == first
    module.write_text("def f(x):\n    return x + 2\n")
    assert identity.compute_fingerprint(tmp_path) != first
