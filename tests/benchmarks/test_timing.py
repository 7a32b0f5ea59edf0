"""The peak RSS a benchmark record reports is the one at the end of its timed iterations."""

from __future__ import annotations

from ldm_jax.benchmarks import timing


def _record(times):
    return timing.record("b", "f", "p", 1, "float32", times, 0.0, 1, "x", None, None, 1)


def test_time_iterations_carries_the_peak_at_the_end_of_the_timing():
    times = timing.time_iterations(lambda: None, repeats=3, warmup=0)
    assert len(times) == 3 and 0 < times.peak_rss_bytes <= timing.peak_rss_bytes()


def test_record_reports_the_timing_peak_not_the_peak_at_record_time():
    times = timing.Timings([0.5, 0.25])
    times.peak_rss_bytes = 123  # what FLOP counting after the timing must not overwrite
    r = _record(times)
    assert r["peak_rss_bytes"] == 123 and r["median_s"] == 0.375
    assert _record([0.5, 0.25])["peak_rss_bytes"] > 123  # a plain list: the peak at record time
