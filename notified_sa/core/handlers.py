"""The handler registry: which handlers run for which event name, under which result key.

Registration is where mistakes are cheapest to catch, so everything that can be checked without an event is
checked here: the name, that the handler is callable, and that it can be called with the arguments the runtime
will pass. The registry is copy-on-write: readers (the claiming loop) take the current mapping without a lock.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from types import MappingProxyType
from typing import Any

__all__ = ["HandlerRegistry", "HandlerSpec", "check_event_name", "handler_key"]


@dataclass(frozen=True)
class HandlerSpec:
    """A registered handler and the key its result is stored under in an event's ``results``."""

    key: str
    fn: Callable[..., Any]
    #: True for ``async def`` handlers (and objects whose ``__call__`` is one): the asyncio runtime awaits them.
    is_async: bool = False
    #: True for transactional handlers: called as ``fn(event, session)``, their success recorded in the same
    #: transaction as their writes (see :mod:`notified_sa.threaded.transactional`).
    transactional: bool = False


def handler_key(fn: Callable[..., Any]) -> str:
    """The default result key of a handler: its module and qualified name (``partial`` unwrapped)."""
    target: Any = fn
    while isinstance(target, partial):
        target = target.func
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{qualname}"


def check_event_name(event_name: object) -> str:
    """``event_name`` if it can name events in the table, else a ValueError or TypeError saying what to pass."""
    if callable(event_name) and not isinstance(event_name, str):
        raise TypeError(
            f"an event name is needed: write @server.handler('event_name') above {handler_key(event_name)}, "
            "not @server.handler"
        )
    if not isinstance(event_name, str) or not event_name:
        raise ValueError(f"event name must be a non-empty string, got {event_name!r}")
    if "\x00" in event_name:
        raise ValueError(f"event name {event_name!r} contains a NUL character, which PostgreSQL cannot store")
    try:
        event_name.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"event name {event_name!r} is not valid UTF-8 (a lone surrogate)") from None
    return event_name


def _is_async(fn: Callable[..., Any]) -> bool:
    target: Any = fn
    while isinstance(target, partial):
        target = target.func
    if inspect.iscoroutinefunction(target):
        return True
    call = getattr(target, "__call__", None)  # noqa: B004 - a callable object's own __call__
    return call is not None and not inspect.isfunction(target) and inspect.iscoroutinefunction(call)


def _check_arity(fn: Callable[..., Any], event_name: str, arguments: tuple[str, ...]) -> None:
    """Raise TypeError if ``fn`` cannot be called with ``arguments`` positionally (checked when Python can tell)."""
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C callables have none: they are checked when called
        return
    try:
        signature.bind(*arguments)
    except TypeError as exc:
        wanted = ", ".join(arguments)
        raise TypeError(
            f"handler {handler_key(fn)} for {event_name!r} cannot be called as handler({wanted}): {exc}. "
            f"A handler takes exactly {len(arguments)} positional argument{'s' if len(arguments) > 1 else ''} "
            f"({wanted})"
        ) from None


class HandlerRegistry:
    """Event name -> the handlers registered for it, in registration order."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: Mapping[str, tuple[HandlerSpec, ...]] = MappingProxyType({})

    def add(
        self,
        event_name: str,
        fn: Callable[..., Any],
        *,
        key: str | None = None,
        transactional: bool = False,
    ) -> HandlerSpec:
        """Register ``fn`` for ``event_name``; return its spec. Keys are made unique with ``#2``, ``#3``, ...

        A transactional handler is called as ``fn(event, session)``, any other as ``fn(event)``."""
        check_event_name(event_name)
        if not callable(fn):
            raise TypeError(f"handler for {event_name!r} must be callable, got {type(fn).__name__}")
        if not isinstance(transactional, bool):
            raise TypeError(f"transactional must be True or False, got {transactional!r}")
        _check_arity(fn, event_name, ("event", "session") if transactional else ("event",))
        base = key if key is not None else handler_key(fn)
        if not isinstance(base, str) or not base:
            raise ValueError(f"handler key must be a non-empty string, got {base!r}")
        with self._lock:
            specs = self._by_name.get(event_name, ())
            taken = {spec.key for spec in specs}
            unique, n = base, 1
            while unique in taken:
                n += 1
                unique = f"{base}#{n}"
            spec = HandlerSpec(unique, fn, _is_async(fn), transactional)
            updated = dict(self._by_name)
            updated[event_name] = (*specs, spec)
            self._by_name = MappingProxyType(updated)
        return spec

    @property
    def current(self) -> Mapping[str, tuple[HandlerSpec, ...]]:
        """The registrations now (an immutable mapping; later registrations make a new one)."""
        return self._by_name

    def names(self) -> list[str]:
        """The event names with at least one handler, sorted."""
        return sorted(self._by_name)

    def transactional(self) -> bool:
        """True if any registered handler is transactional."""
        return any(spec.transactional for specs in self._by_name.values() for spec in specs)

    def __bool__(self) -> bool:
        return bool(self._by_name)
