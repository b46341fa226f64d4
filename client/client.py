"""The client: recommendations and similar movies over either transport, with deadlines and retries."""

from __future__ import annotations

import logging
import numbers
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeGuard, TypeVar, overload

from client import credentials
from client.credentials import Tls, headers_from_env
from client.errors import (
    DeadlineExceededError,
    FailedPreconditionError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TlsError,
    UnavailableError,
)
from client.results import Hit, ModelMetadata, Recommendations, VersionStatus
from client.settings import ModelRef, Retry, Settings, _check_timeout, default_url
from client.tensors import Tensor
from client.transports import Transport, for_endpoint

log = logging.getLogger(__name__)
T = TypeVar("T")

TITLES, SCORES, IDS = "movie_titles", "scores", "movie_ids"  # IDS: absent from models exported before it
FALLBACK, UNMATCHED = "fallback", "unmatched"  # absent from models exported before them (issue 18)
_FLOAT32 = struct.Struct("<f")


class ArrayLike(Protocol):
    """What numpy arrays and pandas Series have: ``tolist()``, their values as (nested) Python lists."""

    def tolist(self) -> Any: ...


class Client:
    """One server, one connection pool (REST) or channel (gRPC); safe to share across threads.

    ``url``: ``http://host:8501`` (REST) or ``grpc://host:8500`` (gRPC), ``https://`` / ``grpcs://`` for TLS;
    default ``$RETRIEVAL_URL``, else ``http://localhost:8501``. Several replicas: a list of URLs, or one string
    of comma-separated URLs; calls then go round robin and fail over on UNAVAILABLE
    (:class:`client.transports.multi.RoundRobinTransport`).
    ``timeout`` is each call's deadline in seconds, retries included (a call may override it with ``timeout=``).
    ``tls``: what to trust and present over TLS (:class:`client.Tls`; default from ``$RETRIEVAL_CA_CERT``, ...);
    ``headers``: sent on every request, e.g. ``{"Authorization": "Bearer ..."}`` (default from
    ``$RETRIEVAL_TOKEN`` and ``$RETRIEVAL_HEADERS``); see :mod:`client.credentials`.
    ``transport`` replaces the one the URL would choose (tests plug fakes here).
    """

    def __init__(
        self,
        url: str | Sequence[str] | None = None,
        *,
        timeout: float = 10.0,
        retry: Retry | None = None,
        retrieval_model: str = "retrieval",
        similar_model: str = "similar_movies",
        tls: Tls | None = None,
        headers: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
        transport: Transport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if url is not None and not isinstance(url, str):  # several replicas
            url = ",".join(url)
        self.settings = Settings(
            url or default_url(),
            timeout,
            retry or Retry(),
            retrieval_model,
            similar_model,
            Tls.from_env() if tls is None else tls,
            headers_from_env() if headers is None else credentials.headers(headers),
        )
        if transport is None:
            endpoints, tls, sent = self.settings.endpoints, self.settings.tls, self.settings.headers
            if len(endpoints) == 1:
                transport = for_endpoint(endpoints[0], tls, sent)
            else:
                from client.transports.multi import RoundRobinTransport

                transport = RoundRobinTransport([for_endpoint(e, tls, sent) for e in endpoints])
        self._transport = transport
        self._sleep = sleep
        self._closed = False
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return self.settings.url

    def __repr__(self) -> str:
        return f"Client({self.settings.url!r})"

    # -- the domain calls ----------------------------------------------------------------------------------
    # A str is also a Sequence[str]: overloads match in order, so one id gets the first (what the
    # implementation does too); mypy's overlap check cannot see the order.
    @overload
    def recommend(  # type: ignore[overload-overlap]
        self,
        user_ids: str | int,
        k: int | None = ...,
        exclude: Sequence[str] | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        exclude_ids: Sequence[str | int] | None = ...,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    def recommend(
        self,
        user_ids: Sequence[str | int],
        k: int | None = ...,
        exclude: Sequence[Sequence[str]] | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        exclude_ids: Sequence[Sequence[str | int]] | None = ...,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    def recommend(
        self,
        user_ids: str | int | Sequence[str | int],
        k: int | None = None,
        exclude: Sequence[str] | Sequence[Sequence[str]] | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        exclude_ids: Sequence[str | int] | Sequence[Sequence[str | int]] | None = None,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies for a user (a str or int id: one :class:`Recommendations`) or for several (a list: one per user).

        ``exclude``: titles never to return (a list for one user, a list of lists for several), answered by
        the ``exclude_seen`` signature; ``exclude_ids``: the same by catalogue id (``exclude_seen_by_id``).
        ``k``: how many hits (default: all K the model was exported with). An unknown user gets the most popular
        movies with ``fallback`` True; exclusions that match no movie are counted in ``unmatched``.
        """
        single, ids = _keys(user_ids, "user id", "user_ids")
        _check_k(k)
        inputs: dict[str, Any] = {"user_id": ids}
        signature = "serving_default"
        if exclude is not None and exclude_ids is not None:
            raise InvalidArgumentError("give exclude (titles) or exclude_ids (catalogue ids), not both")
        if exclude is not None:
            inputs["exclude_titles"] = _exclusions(exclude, "exclude", "titles", _titles, single, len(ids))
            signature = "exclude_seen"
        elif exclude_ids is not None:
            inputs["exclude_ids"] = _exclusions(exclude_ids, "exclude_ids", "movie ids", _ids, single, len(ids))
            signature = "exclude_seen_by_id"
        hits = self._hits(self.settings.retrieval_model, inputs, signature, k, version, label, timeout)
        return hits[0] if single else hits

    @overload
    def similar(  # type: ignore[overload-overlap]  # the first match wins for a str, as for recommend
        self,
        titles: str,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    def similar(
        self,
        titles: Sequence[str],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    def similar(
        self,
        titles: str | Sequence[str],
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies like a title (a str: one :class:`Recommendations`) or like each of several (a list: one each);
        an unknown title gets the most popular movies with ``fallback`` True."""
        single = isinstance(titles, str)
        keys = [titles] if single else _titles(titles, "titles")
        _check_k(k)
        hits = self._hits(
            self.settings.similar_model, {"movie_title": keys}, "serving_default", k, version, label, timeout
        )
        return hits[0] if single else hits

    @overload
    def similar_by_id(  # type: ignore[overload-overlap]  # as for similar
        self,
        movie_ids: str | int,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    def similar_by_id(
        self,
        movie_ids: Sequence[str | int],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    def similar_by_id(
        self,
        movie_ids: str | int | Sequence[str | int],
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies like the movie with a catalogue id (a str or int: one :class:`Recommendations`) or like each of
        several, answered by ``similar_movies``' ``by_id`` signature (every id of a title several ids share finds
        it); an unknown id gets the most popular movies with ``fallback`` True."""
        single, keys = _keys(movie_ids, "movie id", "movie_ids")
        _check_k(k)
        hits = self._hits(self.settings.similar_model, {"movie_id": keys}, "by_id", k, version, label, timeout)
        return hits[0] if single else hits

    @overload
    def recommend_for_history(  # type: ignore[overload-overlap]  # a str is a Sequence too, as for recommend
        self,
        history: Sequence[str],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    def recommend_for_history(
        self,
        history: Sequence[Sequence[str]],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    @overload
    def recommend_for_history(
        self,
        history: ArrayLike,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations | list[Recommendations]: ...

    def recommend_for_history(
        self,
        history: Sequence[str] | Sequence[Sequence[str]] | ArrayLike,
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """Movies for someone known only by the titles they watched: one history (a list of titles, also a
        tuple, a 1-D numpy array or a pandas Series; empty is a history too) gives one :class:`Recommendations`,
        a list of histories (or a 2-D array) one per history. Answered by ``retrieval``'s ``by_history``
        signature: a history's own titles are never returned, titles the model does not know are ignored and
        counted in ``unmatched``, and a history with no known title gets the most popular movies
        (``fallback`` True)."""
        return self._for_history(
            history, "history", "history_titles", "by_history", _titles, k, version, label, timeout
        )

    @overload
    def recommend_for_history_ids(  # type: ignore[overload-overlap]  # as for recommend_for_history
        self,
        history_ids: Sequence[str | int],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations: ...

    @overload
    def recommend_for_history_ids(
        self,
        history_ids: Sequence[Sequence[str | int]],
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> list[Recommendations]: ...

    @overload
    def recommend_for_history_ids(
        self,
        history_ids: ArrayLike,
        k: int | None = ...,
        version: int | None = ...,
        label: str | None = ...,
        *,
        timeout: float | None = ...,
    ) -> Recommendations | list[Recommendations]: ...

    def recommend_for_history_ids(
        self,
        history_ids: Sequence[str | int] | Sequence[Sequence[str | int]] | ArrayLike,
        k: int | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> Recommendations | list[Recommendations]:
        """:meth:`recommend_for_history` by catalogue id (str or int, as ``Hit.id``): one history of ids, or a
        list of them; answered by the ``by_history_ids`` signature, where each id stands for the title it is
        served as and an unknown id is ignored (counted in ``unmatched``)."""
        return self._for_history(
            history_ids, "history_ids", "history_ids", "by_history_ids", _ids, k, version, label, timeout
        )

    # -- TF Serving's calls --------------------------------------------------------------------------------
    def predict(
        self,
        model_name: str,
        inputs: Mapping[str, Any],
        signature_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        output_filter: Sequence[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Any model and signature: ``inputs`` name -> nested lists (or :class:`client.Tensor`); returns
        output name -> nested lists, strings as str (outputs named ``*_bytes`` as bytes)."""
        model = ModelRef(model_name, version, label, signature_name)
        if not isinstance(inputs, Mapping) or not inputs:
            raise InvalidArgumentError(f"inputs must be a non-empty mapping of input name to values (got {inputs!r})")
        tensors = {name: Tensor.of(value, name=name) for name, value in inputs.items()}
        if output_filter is not None:
            output_filter = _titles(output_filter, "output_filter")
        return self._call(lambda t: self._transport.predict(model, tensors, output_filter, t), timeout, model)

    def status(
        self,
        model_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> list[VersionStatus]:
        """The versions of a model (default: the retrieval model), newest first."""
        model = ModelRef(model_name or self.settings.retrieval_model, version, label)
        return self._call(lambda t: self._transport.status(model, t), timeout, model)

    def metadata(
        self,
        model_name: str | None = None,
        version: int | None = None,
        label: str | None = None,
        *,
        timeout: float | None = None,
    ) -> ModelMetadata:
        """The signatures of a model's version (default: the retrieval model's latest)."""
        model = ModelRef(model_name or self.settings.retrieval_model, version, label)
        return self._call(lambda t: self._transport.metadata(model, t), timeout, model)

    def wait_until_available(self, timeout: float = 30.0, model_names: Sequence[str] | None = None) -> None:
        """Block until each model (default: retrieval and similar_movies) has an AVAILABLE version.

        Raises DeadlineExceededError naming what was still missing when ``timeout`` passed.
        """
        _check_timeout(timeout)
        self._check_open()
        names = (
            list(model_names)
            if model_names is not None
            else [self.settings.retrieval_model, self.settings.similar_model]
        )
        deadline = time.monotonic() + timeout
        delay, last_log, waiting = 0.05, 0.0, ""
        while True:
            try:
                missing = [
                    n
                    for n in names
                    if not any(
                        v.state == "AVAILABLE" for v in self._transport.status(ModelRef(n), _left(deadline, 5.0))
                    )
                ]
                if not missing:
                    return
                waiting = f"no AVAILABLE version of {', '.join(missing)} yet"
            except TlsError:  # waiting will not make the certificate trusted
                raise
            except (UnavailableError, NotFoundError, DeadlineExceededError) as exc:
                waiting = str(exc)
            now = time.monotonic()
            if now >= deadline:
                raise DeadlineExceededError(f"{self.settings.url} not ready after {timeout:.3g} s: {waiting}")
            if now - last_log >= 5.0:
                log.info("waiting for %s: %s", self.settings.url, waiting)
                last_log = now
            self._sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 2, 0.5)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self._transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------------------
    def _call(self, attempt: Callable[[float], T], timeout: float | None, model: ModelRef) -> T:
        """One call under one deadline, retrying UNAVAILABLE (only) with backoff while the deadline allows."""
        self._check_open()
        timeout = self.settings.timeout if timeout is None else _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        delays = self.settings.retry.delays()
        tries = 1
        while True:
            try:
                return attempt(deadline - time.monotonic())
            except UnavailableError as exc:
                if isinstance(exc, TlsError):  # the same certificate will not be trusted on the next try
                    raise
                delay = next(delays, None)
                if delay is None or time.monotonic() + delay >= deadline:
                    raise
                log.warning("%s on %s: %s; retry %d in %.2f s", exc.code, model, exc.message, tries, delay)
                tries += 1
                self._sleep(delay)
                if time.monotonic() >= deadline:  # the sleep overran: no attempt with a timeout <= 0
                    raise DeadlineExceededError(
                        f"deadline of {timeout:.3g} s passed while retrying {model}: {exc.message}"
                    ) from exc

    def _check_open(self) -> None:
        if self._closed:
            raise FailedPreconditionError(f"{self!r} is closed; make a new client")

    def _for_history(
        self,
        value: Any,
        what: str,
        input_name: str,
        signature: str,
        entries: Callable[[Any, str], list[str]],
        k: int | None,
        version: int | None,
        label: str | None,
        timeout: float | None,
    ) -> Recommendations | list[Recommendations]:
        """``recommend_for_history`` and ``..._ids``: history rows made as exclusion rows are, one signature."""
        single, rows = _rows(value, what, entries)
        _check_k(k)
        inputs: dict[str, list[Any]] = {input_name: _padded(rows)}
        hits = self._hits(self.settings.retrieval_model, inputs, signature, k, version, label, timeout)
        return hits[0] if single else hits

    def _hits(
        self,
        model_name: str,
        inputs: dict[str, list[Any]],
        signature: str,
        k: int | None,
        version: int | None,
        label: str | None,
        timeout: float | None,
    ) -> list[Recommendations]:
        """Predict, then one :class:`Recommendations` per row of the first input, cut to ``k``."""
        if not inputs[next(iter(inputs))]:
            return []
        # No output_filter: a filter naming movie_ids fails on a model that lacks it, and the outputs are small.
        outputs = self.predict(model_name, inputs, signature, version, label, timeout=timeout)
        model = ModelRef(model_name, version, label, signature)
        titles, scores = outputs.get(TITLES), outputs.get(SCORES)
        rows = len(inputs[next(iter(inputs))])
        if not (
            _matrix(titles, rows)
            and _matrix(scores, rows)
            and all(len(t) == len(s) for t, s in zip(titles, scores, strict=True))
        ):
            raise InternalError(
                f"{model} must answer '{TITLES}' and '{SCORES}' of shape [{rows}, K]; got {sorted(outputs)}"
            )
        width = len(titles[0]) if rows else 0
        if k is not None and k > width:
            raise InvalidArgumentError(
                f"k={k} is above K={width}, the number of results {model} was exported with; "
                f"ask for k <= {width} (or export with a larger K)"
            )
        ids = outputs.get(IDS)
        if not (_matrix(ids, rows) and all(len(i) == len(t) for i, t in zip(ids, titles, strict=True))):
            ids = [[""] * len(t) for t in titles]
        fallbacks = _per_row(outputs, FALLBACK, rows, model)
        unmatched = _per_row(outputs, UNMATCHED, rows, model)
        return [
            Recommendations(
                [Hit(str(t), _f32(s), str(i)) for t, s, i in zip(trow[:k], srow[:k], irow[:k], strict=True)],
                fallback=None if fallbacks is None else bool(fallbacks[row]),
                unmatched=0 if unmatched is None else int(unmatched[row]),
            )
            for row, (trow, srow, irow) in enumerate(zip(titles, scores, ids, strict=True))
        ]


def connect(url: str | None = None, **options: Any) -> Client:
    """A :class:`Client` for ``url`` (``http(s)://...`` REST, ``grpc(s)://...`` gRPC); options as for Client."""
    return Client(url, **options)


def _left(deadline: float, cap: float) -> float:
    return max(min(deadline - time.monotonic(), cap), 0.001)


def _check_k(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InvalidArgumentError(f"k must be a positive int (got {k!r})")


def _as_list(value: Any) -> list[Any] | None:
    """``value`` as a list if it is one: a sequence other than str/bytes (list, tuple, range, ...), or an array
    with ``tolist()`` (numpy, pandas: items come back as Python values, a 2-D array's rows as lists); else None."""
    if isinstance(value, (str, bytes)):
        return None
    if isinstance(value, Sequence):
        return list(value)
    tolist = getattr(value, "tolist", None)
    items = tolist() if callable(tolist) else None  # a numpy scalar's tolist() is a scalar: not a list
    return items if isinstance(items, list) else None


def _sequence(value: Any, what: str) -> list[Any]:
    items = _as_list(value)
    if items is None:
        raise InvalidArgumentError(f"{what} must be a list (got {type(value).__name__}: {value!r})")
    return items


def _is_key(value: Any) -> bool:
    """A str, or an int of any kind (numpy's too) but not a bool."""
    return isinstance(value, str) or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _key(value: Any, what: str) -> str:
    if not _is_key(value):
        raise InvalidArgumentError(f"a {what} is a str or an int (got {type(value).__name__}: {value!r})")
    return str(value) if isinstance(value, str) else str(int(value))


def _keys(value: Any, what: str, name: str) -> tuple[bool, list[str]]:
    """(one key?, the keys as str): one str or int id, or a list of them."""
    single = _is_key(value)
    return single, [_key(v, what) for v in ([value] if single else _sequence(value, name))]


def _ids(value: Any, what: str) -> list[str]:
    return [_key(v, "movie id") for v in _sequence(value, what)]


def _exclusions(
    value: Any, what: str, noun: str, entries: Callable[[Any, str], list[str]], single: bool, users: int
) -> list[list[str]]:
    """Exclusion rows (``entries`` of each) for ``exclude_titles`` or ``exclude_ids``: one per user, made by
    :func:`_padded`."""
    rows = [entries(value, what)] if single else _each(value, what, entries)
    if len(rows) != users:
        raise InvalidArgumentError(f"{what} needs one list of {noun} per user id ({len(rows)} lists for {users} ids)")
    return _padded(rows)


def _rows(value: Any, what: str, entries: Callable[[Any, str], list[str]]) -> tuple[bool, list[list[str]]]:
    """(one row?, the rows): ``value`` is one list of ``entries`` (an empty list too) or a list of such lists,
    told apart by its items (any list among them: several rows), or by ``ndim`` for an array (2-D: rows, even
    none)."""
    items = _sequence(value, what)
    if getattr(value, "ndim", 1) == 2 or any(_as_list(item) is not None for item in items):
        return False, _each(items, what, entries)
    return True, [entries(items, what)]


def _each(value: Any, what: str, entries: Callable[[Any, str], list[str]]) -> list[list[str]]:
    """Each item of the list ``value`` as a row of ``entries``; errors name the item (``what[i]``)."""
    return [entries(row, f"{what}[{i}]") for i, row in enumerate(_sequence(value, what))]


def _padded(rows: list[list[str]]) -> list[list[str]]:
    """Rows of keys (exclusions, histories) as one rectangular [rows, 1 + widest] input: padded with "" (no
    item), and led by a "" column: TF Serving's batching pads a request to the widest request of its batch with
    the request's *first* element (batching_util.cc), which must therefore be "" or other requests' rows would
    gain the first row's first entry."""
    width = max(map(len, rows), default=0)
    return [[""] + row + [""] * (width - len(row)) for row in rows]


def _titles(value: Any, what: str) -> list[str]:
    items = _sequence(value, what)
    bad = [v for v in items if not isinstance(v, str)]
    if bad:
        raise InvalidArgumentError(f"{what} must hold strings (got {bad[0]!r})")
    return items


def _matrix(value: Any, rows: int) -> TypeGuard[list[list[Any]]]:
    return isinstance(value, list) and len(value) == rows and all(isinstance(r, list) for r in value)


def _per_row(outputs: Mapping[str, Any], name: str, rows: int, model: ModelRef) -> list[int] | None:
    """Output ``name`` (``fallback`` DT_BOOL or ``unmatched`` DT_INT32, shape [rows]) as one value per row (a
    bool is an int too); None when the version answered without it (exported before it)."""
    value = outputs.get(name)
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == rows and all(isinstance(v, numbers.Integral) for v in value)):
        raise InternalError(f"{model} must answer '{name}' of shape [{rows}] (one per row); got {value!r:.200}")
    return value


def _f32(value: Any) -> float:
    """A DT_FLOAT score as the shortest decimal that is the same float32, so REST and gRPC agree exactly."""
    exact = _FLOAT32.unpack(_FLOAT32.pack(float(value)))[0]
    for digits in (6, 7, 8):
        short = float(f"{exact:.{digits}g}")
        if _FLOAT32.unpack(_FLOAT32.pack(short))[0] == exact:
            return short
    return float(f"{exact:.9g}")  # 9 significant digits always identify a float32
