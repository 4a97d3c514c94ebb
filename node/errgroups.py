"""Giving callers back the error they raised through trio nurseries."""

from __future__ import annotations

from contextlib import contextmanager


@contextmanager
def unwrap_single_errors():
    """Nurseries (ours and libp2p's) wrap an error raised in the caller's `async with` body in
    nested one-element groups; give the caller back the error it raised."""
    try:
        yield
    except BaseExceptionGroup as eg:
        inner = eg
        while isinstance(inner, BaseExceptionGroup) and len(inner.exceptions) == 1:
            inner = inner.exceptions[0]
        if inner is eg or isinstance(inner, BaseExceptionGroup):
            raise
        raise inner from None
