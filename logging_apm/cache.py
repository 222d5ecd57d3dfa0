"""Cache instrumentation: one ``cache`` event per call on any Django cache backend.

``install()`` wraps the public methods of each cache object as ``django.core.cache.caches`` creates it
(Django makes one per alias and thread) and of those already created; ``uninstall()`` unwraps them all.
Wrapping the instance, not the backend class, makes it work for any backend (locmem, Redis, Memcached,
database, file, third-party) and lets the event carry the alias.

Per call: ``cache.name`` (alias), ``cache.operation`` (the sync name, also for ``aget`` & co), duration,
``cache.keys`` (how many keys the call touched; never their names) and, for reads, ``cache.hit``:
``get`` found the key, ``get_many`` found all of them, ``has_key`` answered true, ``get_or_set`` found the
key without computing the default. A call made inside another instrumented call (``get_or_set`` calls
``get`` then ``add``; the default ``aget`` runs ``get`` in a thread) is folded into the outer event.
"""

from __future__ import annotations

import contextvars
import functools
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

from logging_apm import emit as _emit
from logging_apm.errors import instrumentation_failed

__all__ = ["OPERATIONS", "install", "installed", "uninstall"]

# operation -> how to count its keys from (args, kwargs); reads additionally report a hit.
_ONE: Final = "one"
_MANY: Final = "many"  # first argument is an iterable or mapping of keys
_NONE: Final = "none"
OPERATIONS: Final[dict[str, str]] = {
    "get": _ONE, "get_many": _MANY, "get_or_set": _ONE, "has_key": _ONE,
    "set": _ONE, "add": _ONE, "set_many": _MANY, "touch": _ONE,
    "delete": _ONE, "delete_many": _MANY, "incr": _ONE, "decr": _ONE,
    "incr_version": _ONE, "decr_version": _ONE, "clear": _NONE,
}
_READS: Final = frozenset({"get", "get_many", "get_or_set", "has_key"})
_MISSING: Final = object()
_perf = time.perf_counter


class _Call:
    """The outermost instrumented call in progress; inner calls report into it instead of emitting."""

    __slots__ = ("hit",)

    def __init__(self) -> None:
        self.hit: bool | None = None


_active: contextvars.ContextVar[_Call | None] = contextvars.ContextVar("logging_apm_cache_call", default=None)


def _keys(kind: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    if kind == _ONE:
        return 1
    if kind == _NONE:
        return 0
    keys = args[0] if args else next(iter(kwargs.values()), ())
    try:
        return len(keys)
    except TypeError:
        return 0


def _emit_event(alias: str, op: str, kind: str, args: tuple[Any, ...], kwargs: dict[str, Any],
                start: float, hit: bool | None, error: str | None) -> None:
    duration_ms = (_perf() - start) * 1000.0
    try:
        attrs: dict[str, Any] = {"cache.name": alias, "cache.operation": op, "cache.keys": _keys(kind, args, kwargs)}
        if hit is not None and op in _READS and error is None:
            attrs["cache.hit"] = hit
        if error is not None:
            attrs["error.type"] = error
        _emit.emit("cache", duration_ms, "failure" if error else "success", attrs)
    except Exception as exc:
        instrumentation_failed("cache.record", exc)


def _call_read(op: str, original: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
               call: _Call) -> Any:
    """Run a read and note whether it hit (the first read of a call decides, e.g. get_or_set's get)."""
    if op == "get":
        # Ask with a sentinel default so that a stored None or a caller's default is not taken for a miss.
        key = args[0] if args else kwargs.pop("key")
        default = args[1] if len(args) > 1 else kwargs.pop("default", None)
        rest = args[2:]
        value = original(key, _MISSING, *rest, **kwargs)
        if call.hit is None:
            call.hit = value is not _MISSING
        return default if value is _MISSING else value
    result = original(*args, **kwargs)
    if call.hit is None:
        call.hit = _hit_of(op, result, args, kwargs)
    return result


def _hit_of(op: str, result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool | None:
    """A multi-key or boolean read judged by its result (what its own inner reads said does not count)."""
    if op == "get_many":
        return len(result) > 0 and len(result) == _keys(_MANY, args, kwargs)
    if op == "has_key":
        return bool(result)
    return None


def _sync_wrapper(alias: str, op: str, original: Callable[..., Any]) -> Callable[..., Any]:
    kind = OPERATIONS[op]
    read = op in _READS

    @functools.wraps(original)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        outer = _active.get()
        if outer is not None:  # inside another instrumented call: contribute the hit, emit nothing
            return _call_read(op, original, args, kwargs, outer) if read else original(*args, **kwargs)
        if not _emit.get_emitter().enabled:
            return original(*args, **kwargs)
        call = _Call()
        token = _active.set(call)
        start = _perf()
        try:
            if op == "get":
                result = _call_read(op, original, args, kwargs, call)
            else:
                # get_or_set is get, then add on a miss: its inner get (reported into ``call``) decides.
                result = original(*args, **kwargs)
                if op in ("get_many", "has_key"):
                    call.hit = _hit_of(op, result, args, kwargs)
        except BaseException as exc:
            _active.reset(token)
            _emit_event(alias, op, kind, args, kwargs, start, None, type(exc).__name__)
            raise
        _active.reset(token)
        _emit_event(alias, op, kind, args, kwargs, start, call.hit, None)
        return result

    wrapper._logging_apm_original = original  # type: ignore[attr-defined]
    return wrapper


def _async_wrapper(alias: str, op: str, original: Callable[..., Any]) -> Callable[..., Any]:
    kind = OPERATIONS[op]

    @functools.wraps(original)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        outer = _active.get()
        if outer is not None or not _emit.get_emitter().enabled:
            return await original(*args, **kwargs)
        call = _Call()
        token = _active.set(call)  # the default a* methods run the sync method in a thread: context copied
        start = _perf()
        try:
            result = await original(*args, **kwargs)
        except BaseException as exc:
            _active.reset(token)
            _emit_event(alias, op, kind, args, kwargs, start, None, type(exc).__name__)
            raise
        _active.reset(token)
        if op in ("get_many", "has_key"):
            call.hit = _hit_of(op, result, args, kwargs)
        _emit_event(alias, op, kind, args, kwargs, start, call.hit, None)
        return result

    wrapper._logging_apm_original = original  # type: ignore[attr-defined]
    return wrapper


_lock = threading.Lock()
_wrapped: weakref.WeakSet[Any] = weakref.WeakSet()
_original_create: Callable[..., Any] | None = None


def _wrap(backend: Any, alias: str) -> None:
    if backend in _wrapped:
        return
    for op in OPERATIONS:
        method = getattr(backend, op, None)
        if method is not None and not hasattr(method, "_logging_apm_original"):
            setattr(backend, op, _sync_wrapper(alias, op, method))
        amethod = getattr(backend, "a" + op, None)
        if amethod is not None and not hasattr(amethod, "_logging_apm_original"):
            setattr(backend, "a" + op, _async_wrapper(alias, op, amethod))
    # For a get hit/miss decision, get_or_set's own internal get must be the instrumented one: it is,
    # because BaseCache.get_or_set calls self.get, which now resolves to the instance attribute.
    _wrapped.add(backend)


def _unwrap(backend: Any) -> None:
    for op in OPERATIONS:
        for name in (op, "a" + op):
            if hasattr(backend.__dict__.get(name), "_logging_apm_original"):
                delattr(backend, name)


def install() -> None:
    """Instrument every cache object, present and future. Safe to call twice."""
    global _original_create
    from django.core.cache import CacheHandler, caches

    with _lock:
        if _original_create is None:
            original = CacheHandler.create_connection
            _original_create = original

            @functools.wraps(original)
            def create_connection(self: Any, alias: str) -> Any:
                backend = original(self, alias)
                try:
                    _wrap(backend, alias)
                except Exception as exc:
                    instrumentation_failed("cache.wrap", exc)
                return backend

            CacheHandler.create_connection = create_connection  # type: ignore[method-assign]
        for alias in caches:
            backend = caches[alias]
            _wrap(backend, alias)


def uninstall() -> None:
    """Unwrap every cache object that was wrapped and stop wrapping new ones. Safe to call twice."""
    global _original_create
    from django.core.cache import CacheHandler

    with _lock:
        if _original_create is not None:
            CacheHandler.create_connection = _original_create  # type: ignore[method-assign]
            _original_create = None
        for backend in list(_wrapped):
            _unwrap(backend)
        _wrapped.clear()


def installed() -> bool:
    return _original_create is not None
