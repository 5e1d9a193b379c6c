"""`make bench-bridge`'s table (tools/bench_bridge.py): figures → rows (raw, bridge, ratio, target, met)."""

from __future__ import annotations

import pytest

from tools.bench_bridge import Figures, Rate, Row, percentile, poll_answers, ratio, render, table


def figures(**changes: object) -> Figures:
    base: dict[str, object] = {
        "raw_to_running": [0.10, 0.12, 0.14],
        "pod_to_bound": [0.13, 0.16, 0.20],
        "start_to_bound": [0.05, 0.1],
        "burst_pods": 10,
        "burst_bridge_seconds": 10.0,
        "burst_raw_seconds": 10.0,
        "rss_mib": 80.0,
        "idle_cpu_share": 0.01,
        "polls": {"changed": 3.0, "not_modified": 40.0},
    }
    base.update(changes)
    return Figures(**base)  # type: ignore[arg-type]


def row(rows: list[Row], start: str) -> Row:
    return next(r for r in rows if r.figure.startswith(start))


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([3.0, 1.0, 2.0], 0.5, 2.0),
        ([1.0, 2.0, 3.0], 0.99, 3.0),
        ([5.0], 0.5, 5.0),
        (list(range(1, 101)), 0.5, 50),
    ],
    ids=["median-of-3", "p99-of-few-is-max", "one-value", "nearest-rank"],
)
def test_percentile(values: list[float], share: float, expected: float) -> None:
    assert percentile(values, share) == expected


@pytest.mark.parametrize(
    ("changes", "figure", "met"),
    [
        ({}, "added latency p50", True),
        ({"pod_to_bound": [0.9, 0.9, 0.9]}, "added latency p50", False),
        ({"pod_to_bound": [0.13, 0.16, 0.6]}, "added latency p99", False),
        ({"start_to_bound": [0.1, 1.0]}, "job start->pod bound", False),
        ({"burst_bridge_seconds": 10.4}, "burst of 10", True),
        ({"burst_bridge_seconds": 11.0}, "burst of 10", False),
        ({"rss_mib": 250.0}, "bridge RSS", False),
        ({"rss_mib": None}, "bridge RSS", None),
        ({"idle_cpu_share": 0.05}, "bridge CPU", False),
    ],
    ids=[
        "added-p50-met",
        "added-p50-missed",
        "added-p99-missed",
        "start-to-bound-missed",
        "burst-within-5-percent",
        "burst-too-slow",
        "rss-too-big",
        "rss-not-measured",
        "idle-cpu-too-high",
    ],
)
def test_each_target_is_judged(changes: dict[str, object], figure: str, met: bool | None) -> None:
    assert row(table(figures(**changes)), figure).met is met


def test_rows_without_a_measurement_are_left_out_and_ratios_are_bridge_over_raw() -> None:
    rows = table(figures(burst_bridge_seconds=None, start_to_bound=[]))
    assert not any(r.figure.startswith(("burst", "job start")) for r in rows)
    p50 = row(rows, "added latency p50")
    assert (p50.raw, p50.bridge) == (0.12, 0.16)
    assert ratio(p50) == pytest.approx(0.16 / 0.12)
    assert ratio(row(rows, "bridge RSS")) is None
    text = render(rows)
    assert text.splitlines()[0].split() == ["figure", "raw", "bridge", "ratio", "unit", "target", "met?"]
    assert "job polls answered changed" in text


def test_poll_answers_are_read_from_a_metrics_page() -> None:
    page = (
        "# TYPE slurm_bridge_job_polls_total counter\n"
        'slurm_bridge_job_polls_total{answer="changed"} 3.0\n'
        'slurm_bridge_job_polls_total{answer="repeated"} 2.0\n'
        'slurm_bridge_job_polls_created{answer="changed"} 1.7e9\n'
    )
    assert poll_answers(page) == {"changed": 3.0, "repeated": 2.0}


@pytest.mark.parametrize(
    ("rate", "met"),
    [
        (Rate("burst of 1000 pods", 1000, 100.0, 104.0), True),
        (Rate("burst of 1000 pods", 1000, 100.0, 106.0), False),
        (Rate("delete 1000 bound pods", 1000, 50.0, 40.0), True),
    ],
    ids=["within-5-percent", "slower-than-0.95", "faster-than-bare"],
)
def test_wide_rates_are_judged_against_the_bare_script(rate: Rate, met: bool) -> None:
    judged = row(table(figures(rates=(rate,))), rate.figure)
    assert judged.met is met
    assert judged.raw == pytest.approx(rate.count / (rate.raw_seconds or 1))
    assert judged.unit == "1/s"


def test_a_wide_rate_measured_on_one_side_only_is_left_out() -> None:
    rows = table(figures(rates=(Rate("burst of 200 gangs", 200, None, 30.0),)))
    assert not [r for r in rows if r.figure.startswith("burst of 200 gangs")]
