"""Progress off a terminal: log lines with count, postfix and ETA at the set interval."""

import logging

from m3_memory.progress import Progress, progress


def test_log_lines_off_a_terminal(caplog, monkeypatch):
    monkeypatch.setattr("m3_memory.progress.on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="m3.progress"):
        with Progress(4, "training", "it", every_s=0.0) as bar:
            bar.update(1, loss="0.5000")
            bar.update(1)
    lines = [r.getMessage() for r in caplog.records if r.name == "m3.progress"]
    assert lines[0].startswith("training: 1/4 it (25%), loss 0.5000, elapsed 0:00") and "ETA" in lines[0]
    assert lines[1].startswith("training: 2/4 it (50%), loss 0.5000")
    assert len(lines) == 3  # and the final count on close


def test_no_lines_when_quick_or_hidden(caplog, monkeypatch):
    monkeypatch.setattr("m3_memory.progress.on_terminal", lambda: False)
    with caplog.at_level(logging.INFO, logger="m3.progress"):
        assert list(progress(range(3), "frames")) == [0, 1, 2]  # well under 30 s: silent
        assert list(progress(range(3), "frames", show=False)) == [0, 1, 2]
    assert not [r for r in caplog.records if r.name == "m3.progress"]


def test_interval_from_the_environment(monkeypatch):
    monkeypatch.setenv("M3_PROGRESS_EVERY_S", "2.5")
    assert Progress(1, "x", show=False).every_s == 2.5
