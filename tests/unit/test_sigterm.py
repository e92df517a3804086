"""One owner of SIGTERM: the innermost action runs; the earlier handler comes back."""

import os
import signal
import threading

from tbpipe.components.common.sigterm import earlier_handler, on_sigterm


def test_innermost_action_runs_and_the_earlier_handler_is_restored():
    calls = []
    before = signal.getsignal(signal.SIGTERM)
    with on_sigterm(lambda: calls.append("outer")) as installed:
        assert installed
        with on_sigterm(lambda: calls.append("inner")):
            os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert earlier_handler() in (before, signal.SIG_DFL)
    assert calls == ["inner", "outer"]
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_nothing_is_installed():
    seen = []

    def worker():
        with on_sigterm(lambda: None) as installed:
            seen.append((installed, signal.getsignal(signal.SIGTERM)))

    before = signal.getsignal(signal.SIGTERM)
    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert seen == [(False, before)]


def test_steps_install_sigterm_handlers_only_through_this_module():
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    owners = sorted(str(p.relative_to(root)) for folder in ("components", "pipelines")
                    for p in (root / folder).rglob("*.py")
                    if "signal.signal(signal.SIGTERM" in p.read_text())
    assert owners == ["components/common/sigterm.py"]
