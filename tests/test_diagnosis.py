"""The report's verdicts: a row below its floors is named with the causes its records show
(collapsed / under-trained / unstable / recipe), and the ranking calls close methods a tie."""

from __future__ import annotations

from lightning_ssl.sweep.diagnosis import causes, diagnosis_lines, diagnostics_table, ranking_lines
from lightning_ssl.sweep.record import RunRecord

METRIC = "linear_full/acc_top1"
KNN = "knn_k200_t0.1/acc_top1"


def rec(
    method: str,
    seed: int | None,
    acc: float,
    knn: float | None = None,
    rank: float = 60.0,
    std: float = 0.8,
    falling: bool = False,
    config: dict | None = None,
) -> RunRecord:
    """A result of ``method``; ``seed=None``: a run without randomness (RawPixels), no seed axis."""
    diag = {
        "features": {"rankme": rank, "dim": 128, "uniformity": -3.0, "std": std, "alignment": 0.5},
        "embedding": {"rankme": rank / 2, "dim": 64, "uniformity": -3.0, "std": std, "alignment": 0.4},
        "rows": 2048,
        "loss_trend": {
            "first": 5.0,
            "last": 4.0,
            "fall_last_quarter": 0.05 if falling else 0.001,
            "still_falling": falling,
        },
    }
    axes = {"method": method, "dataset": "D", **({} if seed is None else {"seed": seed})}
    return RunRecord.from_json(
        {
            "run_id": f"{method}-{seed}",
            "method": method,
            "seed": seed,
            "axes": axes,
            "metrics": {METRIC: acc, KNN: acc if knn is None else knn},
            "diagnostics": diag,
            "config": config or {},
        }
    )


def floors() -> list[RunRecord]:
    return [rec("RawPixels", None, 0.80)] + [rec("RandomInit", s, 0.60) for s in (0, 1, 2)]


def test_a_collapsed_row_is_named_with_its_rank_and_std() -> None:
    records = floors() + [rec("SimSiam", s, 0.60 + 0.001 * s, rank=3.0, std=0.02) for s in (0, 1, 2)]
    lines = diagnosis_lines(records, METRIC)
    line = next(x for x in lines if "SimSiam" in x and METRIC in x)
    assert "misses RawPixels and RandomInit" in line
    assert "collapsed (features RankMe 3.0 of 128, embedding std 0.02)" in line


def test_under_trained_unstable_and_recipe_verdicts() -> None:
    falling = [rec("MoCo", s, 0.61, falling=True) for s in (0, 1, 2)]
    assert causes(falling, METRIC)[0].startswith("under-trained (the loss still fell 5.0 %")
    spread = [rec("DnC", s, acc) for s, acc in ((0, 0.86), (1, 0.78), (2, 0.70))]
    assert any(c.startswith("unstable (seeds from 70.00 to 86.00 %)") for c in causes(spread, METRIC))
    steady = [rec("SwAV", s, 0.62) for s in (0, 1, 2)]
    assert causes(steady, METRIC)[0].startswith(
        "recipe (not collapsed: RankMe 60.0 of 128; loss no longer falling in most seeds (mean fall 0.1 %"
    )


def test_a_temperature_schedule_makes_the_loss_trend_no_evidence() -> None:
    """Under a cyclic temperature the loss rises with tau (+36.7 % over the last quarter of the
    leaderboard's SimCLR+TS run): neither 'under-trained' nor 'loss flat, so the recipe'."""
    schedule = {"model": {"init_args": {"temperature_schedule": {"tau_min": 0.1, "tau_max": 1.0}}}}
    runs = [rec("SimCLR+TS", s, 0.62, falling=True, config=schedule) for s in (0, 1, 2)]
    (cause,) = causes(runs, METRIC)
    assert cause.startswith("not collapsed (RankMe 60.0 of 128); its loss follows the temperature schedule")
    rising = [rec("SimCLR", s, 0.62) for s in (0, 1, 2)]
    for r in rising:
        r.diagnostics["loss_trend"]["fall_last_quarter"] = -0.367
    assert "loss rising (+36.7 % over the last quarter)" in causes(rising, METRIC)[0]


def test_records_without_diagnostics_are_not_called_a_recipe() -> None:
    old = [
        RunRecord.from_json(
            {
                "run_id": f"old-{s}",
                "method": "SimCLR",
                "seed": s,
                "axes": {"method": "SimCLR", "seed": s},
                "metrics": {METRIC: 0.62},
            }
        )
        for s in (0, 1, 2)
    ]
    (cause,) = causes(old, METRIC)
    assert cause.startswith("not diagnosed: its records carry no RankMe and loss trend")


def test_knn_floor_is_checked_too_and_all_clear_is_said() -> None:
    good = floors() + [rec("SimCLR", s, 0.85 + 0.001 * s) for s in (0, 1, 2)]
    assert diagnosis_lines(good, METRIC) == [f"- every method beats both floors on {METRIC} and {KNN}"]
    knn_low = floors() + [rec("SimCLR", s, 0.85 + 0.001 * s, knn=0.79) for s in (0, 1, 2)]
    (line,) = diagnosis_lines(knn_low, METRIC)
    assert f"misses RawPixels on {KNN}" in line


def test_ranking_says_ties_as_ties() -> None:
    records = (
        floors()
        + [rec("A", s, v) for s, v in ((0, 0.80), (1, 0.82), (2, 0.81))]
        + [rec("B", s, v) for s, v in ((0, 0.805), (1, 0.815), (2, 0.81))]
        + [rec("C", s, v) for s, v in ((0, 0.70), (1, 0.701), (2, 0.702))]
        + [rec("D", 0, 0.60)]
    )
    lines = ranking_lines(records, METRIC)
    assert lines[0] == f"- ranking on {METRIC} (dataset=D):"
    assert lines[1].startswith("  1. ") and "tied with" in lines[1]
    assert lines[3] == "  3. C 70.10 ± 0.10 (3 seeds)"
    assert lines[4] == "  4. D 60.00 (1 seed)"
    assert "RandomInit" not in "".join(lines)


def test_diagnostics_table_has_a_row_per_group() -> None:
    table = diagnostics_table(floors() + [rec("SimCLR", s, 0.85) for s in (0, 1)])
    assert table.count("\n") == 4  # header, rule, RandomInit, RawPixels, SimCLR
    assert "| SimCLR | dataset=D | 2 | 60.0 / 128 | 30.0 / 64 | 0.40 | -3.00 | 0.80 | 0.1 % |" in table
    assert diagnostics_table([RunRecord.from_json({"run_id": "x", "axes": {"method": "x"}, "metrics": {}})]) == ""


def test_headline_marks_missing_seeds_and_rows_not_run() -> None:
    from lightning_ssl.sweep.diagnosis import headline_table

    records = floors() + [rec("SimCLR", 0, 0.85)]
    key_simclr = (("dataset", "D"), ("method", "SimCLR"))
    key_moco = (("dataset", "D"), ("method", "MoCo"))
    table = headline_table(records, METRIC, expected={key_simclr: 3, key_moco: 3})
    lines = table.splitlines()
    assert lines[0].startswith("| method | setting | seeds | linear_full/acc_top1 | knn_k200_t0.1/acc_top1 |")
    assert lines[2].startswith("| RawPixels |") and lines[3].startswith("| RandomInit |")
    assert "| SimCLR | dataset=D | 1/3 | 85.00 | 85.00 |" in table
    assert table.rstrip().endswith("| above both floors, one seed: no spread yet |")  # no spread, no finding
    assert "| MoCo | dataset=D | 0/3 | – | – | – |  |  | not run yet |" in table
    assert diagnosis_lines(floors(), METRIC) == ["- no method has finished a run yet"]


def twin_rec(method: str, seed: int | None, twin: bool, acc: float) -> RunRecord:
    axes = {"method": method, "dataset": "D", "balanced_twin": twin, **({} if seed is None else {"seed": seed})}
    return RunRecord.from_json({"run_id": f"{method}-{seed}-{twin}", "axes": axes, "metrics": {METRIC: acc}})


def test_the_papers_direction_is_judged_from_the_twins_gaps() -> None:
    from lightning_ssl.sweep.diagnosis import direction_lines

    def study(raw: float) -> list[RunRecord]:
        records = [twin_rec("RawPixels", None, t, raw) for t in (False, True)]
        for s, (sup, ssl) in enumerate(((0.85, 0.855), (0.86, 0.856), (0.84, 0.854))):
            records += [twin_rec("Supervised", s, True, 0.90), twin_rec("Supervised", s, False, sup)]
            records += [twin_rec("SimCLR", s, True, 0.86), twin_rec("SimCLR", s, False, ssl)]
        return records

    # Δ = (A_bal − A_LT) / A_bal per seed: Supervised 5.56 / 4.44 / 6.67 %, SimCLR 0.58 / 0.47 / 0.70 %;
    # their difference 4.97 points against 2 x 0.65 (the standard error of the difference)
    (line,) = direction_lines(study(raw=0.80), METRIC)
    assert line == (
        "- **SimCLR** (ID, dataset=D): Δ 0.58 ± 0.12 % against Supervised's 5.56 ± 1.11 % (3 seeds): "
        "smaller: the paper's direction"
    )
    (line,) = direction_lines(study(raw=0.86), METRIC)  # now SimCLR's encoder loses to raw pixels
    assert line.endswith("; its long-tailed encoder is 0.50 ± 0.10 points under RawPixels, so this Δ is no finding")
    (line,) = direction_lines(study(raw=0.855), METRIC)  # level with raw pixels, up to rounding
    assert line.endswith("; its long-tailed encoder only ties RawPixels, so this Δ is no finding")
    # SimCLR's margins over raw pixels 0.05 / 0.15 / −0.05 points: above on average, but by less than
    # 2 standard errors (2 x 0.10 / √3 = 0.12 points)
    (line,) = direction_lines(study(raw=0.8545), METRIC)
    assert line.endswith(
        "; its long-tailed encoder is 0.05 ± 0.10 points above RawPixels, within 2 standard errors, so this Δ is "
        "no finding"
    )
    no_reference = [r for r in study(0.8) if r.axes["method"] != "Supervised"]
    assert direction_lines(no_reference, METRIC) == []
    one_seed = [r for r in study(0.8) if r.axes.get("seed") in (None, 0)]
    (line,) = direction_lines(one_seed, METRIC)
    assert line.endswith("against Supervised's 5.56 % (1 seed): one seed, no verdict yet")


def test_a_finding_beats_raw_pixels_by_more_than_two_standard_errors() -> None:
    from lightning_ssl.sweep.diagnosis import headline_table

    def verdict(accs: list[float]) -> str:
        records = floors() + [rec("SimCLR", s, a) for s, a in enumerate(accs)]
        return headline_table(records, METRIC).splitlines()[-1].rsplit("|", 2)[-2].strip()

    # margins over RawPixels (80 %): 5.0, 5.1, 5.2 points, mean 5.1 against 2 x 0.1 / sqrt(3)
    assert verdict([0.85, 0.851, 0.852]) == "finding"
    # 0.5, -0.3, 0.4: mean 0.2 against 2 x 0.44 / sqrt(3) = 0.50
    assert verdict([0.805, 0.797, 0.804]) == "above both floors, within 2 standard errors of RawPixels (3 seeds)"


def test_a_verdict_names_every_floor_missed_on_either_probe() -> None:
    from lightning_ssl.sweep.diagnosis import headline_table

    # linear 5 points over RawPixels (80 %), kNN 0.55-0.57: under RawPixels and under RandomInit's 0.60
    records = floors() + [rec("SwAV", s, 0.85 + 0.001 * s, knn=0.55 + 0.01 * s) for s in (0, 1, 2)]
    verdict = headline_table(records, METRIC).splitlines()[-1].rsplit("|", 2)[-2].strip()
    assert verdict == "misses RandomInit (kNN), RawPixels (kNN)"
    # 0.605 is above RandomInit but by less than the 1-point clear margin: still a miss
    records = floors() + [rec("SwAV", s, 0.605, knn=0.85) for s in (0, 1, 2)]
    verdict = headline_table(records, METRIC).splitlines()[-1].rsplit("|", 2)[-2].strip()
    assert verdict == "misses RandomInit (linear), RawPixels (linear)"
