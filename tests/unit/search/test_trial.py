"""One Ray Tune trial's worker."""

from __future__ import annotations

import sys


def test_a_trial_worker_ends_without_printing_the_sigterm_systemexit(monkeypatch):
    """Issue 17: a trial's worker got SIGTERM while shutting down, Ray's handler raised
    SystemExit inside a WeakSet callback, and the driver printed "Exception ignored in: ...
    SystemExit: 1". The worker leaves that one unprinted, and reports any other."""
    import weakref

    from raytrack.search.trial import quiet_sigterm_exit

    reported = []
    monkeypatch.setattr(sys, "unraisablehook", reported.append)  # restored afterwards
    quiet_sigterm_exit()
    quiet_sigterm_exit()  # once per process, whatever calls it again

    class Thing:
        pass

    for error in (SystemExit(1), ValueError("reported")):

        def callback(_ref, error=error):
            raise error

        thing = Thing()
        ref = weakref.ref(thing, callback)
        del thing  # the callback runs now, where it cannot raise: an unraisable exception
    assert ref() is None
    assert [type(u.exc_value) for u in reported] == [ValueError]
