"""The stop watchdog: silent when the stop finishes, a logged stack dump and an exit when it hangs."""

from __future__ import annotations

import threading

from mailsync.service.stopping import watch_stop


def test_a_stop_that_finishes_in_time_is_left_alone():
    finished, exits = threading.Event(), []
    finished.set()
    watch_stop(finished, grace=5.0, exit_process=exits.append).join(timeout=10)
    assert exits == []


def test_a_stop_that_hangs_is_logged_with_every_threads_stack_and_ended(capsys):
    finished, exits = threading.Event(), []
    blocked = threading.Event()
    stuck = threading.Thread(target=blocked.wait, name="stuck poll", daemon=True)
    stuck.start()
    watch_stop(finished, grace=0.05, exit_process=exits.append).join(timeout=10)
    blocked.set()
    assert exits == [0]
    logged = capsys.readouterr().err
    assert "stop_overdue" in logged
    assert "stuck poll" in logged
