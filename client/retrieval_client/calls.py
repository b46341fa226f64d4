"""Everything a call is besides its I/O, shared by :class:`~retrieval_client.Client` and the asyncio client.

Both clients do the same between the caller's arguments and the transport, and between the transport's
outputs and the result; only the waiting differs (a blocking call and ``time.sleep``, or ``await``). So all
of that is here, with no I/O, and each client is a thin loop around it:

- the settings and the transports a client is made with (:func:`settings`, :func:`transport_for`);
- each domain call's request: arguments checked, the signature chosen, the inputs built
  (:func:`recommend`, :func:`similar`, :func:`similar_by_id`, :func:`for_history`: a :class:`HitsCall`,
  whose :meth:`HitsCall.answer` parses the outputs into :class:`Recommendations`), and ``predict``'s
  (:func:`predict`: a :class:`PredictCall`);
- one call's deadline and its retry decisions (:class:`Attempts`), and ``wait_until_available``'s
  (:class:`Waiting`).
"""

from __future__ import annotations

import logging
import numbers
import struct
import time
from collections.abc import Callable, Iterable, KeysView, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any, Protocol, TypeGuard, TypeVar

from retrieval_client import credentials
from retrieval_client.credentials import Tls, headers_from_env
from retrieval_client.errors import (
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    NotFoundError,
    TlsError,
    UnavailableError,
)
from retrieval_client.results import Hit, Recommendations, VersionStatus
from retrieval_client.settings import Endpoint, ModelRef, Retry, Settings, _check_timeout, default_url
from retrieval_client.tensors import Tensor

log = logging.getLogger("retrieval_client.client")  # both clients' retries log under this one name
T = TypeVar("T")

TITLES, SCORES, IDS = "movie_titles", "scores", "movie_ids"  # IDS: absent from models exported before it
FALLBACK, UNMATCHED = "fallback", "unmatched"  # absent from models exported before them (issue 18)
_FLOAT32 = struct.Struct("<f")


class ArrayLike(Protocol):
    """What numpy arrays and pandas Series have: ``tolist()``, their values as (nested) Python lists."""

    def tolist(self) -> Any: ...


# -- a client's settings and transports ------------------------------------------------------------------------
def settings(
    url: str | Sequence[str] | None,
    timeout: float,
    retry: Retry | None,
    retrieval_model: str,
    similar_model: str,
    tls: Tls | None,
    headers: Mapping[str, str] | Sequence[tuple[str, str]] | None,
) -> Settings:
    """A client's checked :class:`Settings` from its constructor's arguments (defaults from the environment)."""
    if url is not None and not isinstance(url, str):  # several replicas
        url = ",".join(url)
    return Settings(
        url or default_url(),
        timeout,
        retry or Retry(),
        retrieval_model,
        similar_model,
        Tls.from_env() if tls is None else tls,
        headers_from_env() if headers is None else credentials.headers(headers),
    )


def transport_for(
    settings: Settings,
    one: Callable[[Endpoint, Tls, credentials.Headers], T],
    several: Callable[[list[T]], T],
) -> T:
    """``one`` transport for the settings' one URL, else ``several`` (round robin) over one per URL."""
    endpoints, tls, sent = settings.endpoints, settings.tls, settings.headers
    if len(endpoints) == 1:
        return one(endpoints[0], tls, sent)
    return several([one(e, tls, sent) for e in endpoints])


# -- the requests of the calls ---------------------------------------------------------------------------------
def servable(settings: Settings, model_name: str | None, version: int | None, label: str | None) -> ModelRef:
    """What ``status`` and ``metadata`` ask about: a model (default: the retrieval model), a version or label."""
    return ModelRef(model_name or settings.retrieval_model, version, label)


@dataclass(frozen=True)
class PredictCall:
    """A checked ``predict``: the servable, the inputs as tensors, the outputs to keep (None: all)."""

    model: ModelRef
    inputs: dict[str, Tensor]
    output_filter: list[str] | None


def predict(
    model_name: str,
    inputs: Mapping[str, Any],
    signature_name: str | None,
    version: int | None,
    label: str | None,
    output_filter: Sequence[str] | None,
) -> PredictCall:
    model = ModelRef(model_name, version, label, signature_name)
    if not isinstance(inputs, Mapping) or not inputs:
        raise InvalidArgumentError(f"inputs must be a non-empty mapping of input name to values (got {inputs!r})")
    tensors = {name: Tensor.of(value, name=name) for name, value in inputs.items()}
    return PredictCall(model, tensors, None if output_filter is None else _titles(output_filter, "output_filter"))


@dataclass(frozen=True)
class HitsCall:
    """A domain call (recommend, similar, ...): one ``predict`` of ``signature``, one :class:`Recommendations`
    per row of the first input, cut to ``k``; ``single``: the caller gave one query, so answer one."""

    model_name: str
    signature: str
    inputs: dict[str, list[Any]]
    k: int | None
    version: int | None
    label: str | None
    single: bool

    @property
    def rows(self) -> int:
        return len(self.inputs[next(iter(self.inputs))])

    def predict(self) -> PredictCall | None:
        """The predict to send; None when there is nothing to ask (no query: the answer is ``[]``)."""
        if not self.rows:
            return None
        # No output_filter: a filter naming movie_ids fails on a model that lacks it, and the outputs are small.
        return predict(self.model_name, self.inputs, self.signature, self.version, self.label, None)

    def answer(self, outputs: Mapping[str, Any] | None) -> Recommendations | list[Recommendations]:
        """The result from the predict's outputs (None when :meth:`predict` was None)."""
        if outputs is None:
            return []
        model = ModelRef(self.model_name, self.version, self.label, self.signature)
        hits = parse_hits(outputs, self.rows, self.k, model)
        return hits[0] if self.single else hits


def recommend(
    settings: Settings,
    user_ids: Any,
    k: int | None,
    exclude: Any,
    version: int | None,
    label: str | None,
    exclude_ids: Any,
) -> HitsCall:
    """``recommend``: ``serving_default``, or ``exclude_seen`` / ``exclude_seen_by_id`` with exclusions."""
    single, ids = _keys(user_ids, "user id", "user_ids")
    _check_k(k)
    inputs: dict[str, list[Any]] = {"user_id": ids}
    signature = "serving_default"
    if exclude is not None and exclude_ids is not None:
        raise InvalidArgumentError("give exclude (titles) or exclude_ids (catalogue ids), not both")
    if exclude is not None:
        inputs["exclude_titles"] = _exclusions(exclude, "exclude", "titles", _titles, single, len(ids))
        signature = "exclude_seen"
    elif exclude_ids is not None:
        inputs["exclude_ids"] = _exclusions(exclude_ids, "exclude_ids", "movie ids", _ids, single, len(ids))
        signature = "exclude_seen_by_id"
    return HitsCall(settings.retrieval_model, signature, inputs, k, version, label, single)


def similar(settings: Settings, titles: Any, k: int | None, version: int | None, label: str | None) -> HitsCall:
    titles = _scalar(titles)
    single = isinstance(titles, (str, bytes))
    keys = [_text(titles, "a title")] if single else _titles(titles, "titles", ordered=True)
    _check_k(k)
    return HitsCall(settings.similar_model, "serving_default", {"movie_title": keys}, k, version, label, single)


def similar_by_id(
    settings: Settings, movie_ids: Any, k: int | None, version: int | None, label: str | None
) -> HitsCall:
    single, keys = _keys(movie_ids, "movie id", "movie_ids")
    _check_k(k)
    return HitsCall(settings.similar_model, "by_id", {"movie_id": keys}, k, version, label, single)


def for_history(
    settings: Settings, value: Any, by_id: bool, k: int | None, version: int | None, label: str | None
) -> HitsCall:
    """``recommend_for_history`` (titles) and ``..._ids`` (``by_id``): history rows made as exclusion rows
    are, one signature."""
    what, input_name, signature, entries = (
        ("history_ids", "history_ids", "by_history_ids", _ids)
        if by_id
        else ("history", "history_titles", "by_history", _titles)
    )
    single, rows = _rows(value, what, entries)
    _check_k(k)
    return HitsCall(settings.retrieval_model, signature, {input_name: _padded(rows)}, k, version, label, single)


def parse_hits(outputs: Mapping[str, Any], rows: int, k: int | None, model: ModelRef) -> list[Recommendations]:
    """One :class:`Recommendations` per row of a domain signature's outputs, cut to ``k``."""
    titles, scores = outputs.get(TITLES), outputs.get(SCORES)
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


# -- deadlines and retries -------------------------------------------------------------------------------------
class Attempts:
    """One call's deadline (the client's timeout or the call's, retries included) and its retry decisions:
    only UNAVAILABLE is retried, and not a TLS failure, after the :class:`Retry`'s waits, never past the
    deadline. The caller makes the attempts and waits::

        attempts = Attempts(settings, timeout, model)
        while True:
            try:
                return attempt(attempts.left())
            except UnavailableError as exc:
                delay = attempts.backoff(exc)
                if delay is None:
                    raise
                sleep(delay)
                attempts.after_sleep(exc)
    """

    def __init__(self, settings: Settings, timeout: float | None, model: ModelRef) -> None:
        self.timeout = settings.timeout if timeout is None else _check_timeout(timeout)
        self.deadline = time.monotonic() + self.timeout
        self.model = model
        self._delays = settings.retry.delays()
        self._tries = 1

    def left(self) -> float:
        """Seconds left for the next attempt."""
        return self.deadline - time.monotonic()

    def backoff(self, exc: UnavailableError) -> float | None:
        """The wait before retrying after ``exc``, or None: give up (raise ``exc``)."""
        if isinstance(exc, TlsError):  # the same certificate will not be trusted on the next try
            return None
        delay = next(self._delays, None)
        if delay is None or time.monotonic() + delay >= self.deadline:
            return None
        log.warning("%s on %s: %s; retry %d in %.2f s", exc.code, self.model, exc.message, self._tries, delay)
        self._tries += 1
        return delay

    def after_sleep(self, exc: UnavailableError) -> None:
        """DeadlineExceededError if the wait overran the deadline: no attempt with a timeout <= 0."""
        if time.monotonic() >= self.deadline:
            raise DeadlineExceededError(
                f"deadline of {self.timeout:.3g} s passed while retrying {self.model}: {exc.message}"
            ) from exc


class Waiting:
    """``wait_until_available``'s state: which models, the deadline, the backoff between polls, what is
    still missing. The caller polls each model's status and sleeps::

        waiting = Waiting(settings, url, timeout, model_names)
        while True:
            try:
                if waiting.done([(n, transport.status(ModelRef(n), waiting.left())) for n in waiting.names]):
                    return
            except Waiting.RETRYABLE as exc:
                waiting.failed(exc)
            sleep(waiting.pause())
    """

    RETRYABLE = (UnavailableError, NotFoundError, DeadlineExceededError)

    def __init__(self, settings: Settings, timeout: float, model_names: Sequence[str] | None) -> None:
        _check_timeout(timeout)
        self.timeout = timeout
        self.url = settings.url
        self.names = (
            list(model_names) if model_names is not None else [settings.retrieval_model, settings.similar_model]
        )
        self.deadline = time.monotonic() + timeout
        self._delay, self._last_log, self._waiting = 0.05, 0.0, ""

    def left(self) -> float:
        """The timeout of one status call: what is left, at most 5 s (and never 0)."""
        return max(min(self.deadline - time.monotonic(), 5.0), 0.001)

    def done(self, statuses: Iterable[tuple[str, list[VersionStatus]]]) -> bool:
        """Whether every model has an AVAILABLE version, given ``(name, status)`` of each."""
        missing = [name for name, versions in statuses if not any(v.state == "AVAILABLE" for v in versions)]
        self._waiting = f"no AVAILABLE version of {', '.join(missing)} yet"
        return not missing

    def failed(self, exc: UnavailableError | NotFoundError | DeadlineExceededError) -> None:
        """A status call failed: a TLS failure is raised (waiting will not make the certificate trusted),
        anything else is what the next poll waits out."""
        if isinstance(exc, TlsError):
            raise exc
        self._waiting = str(exc)

    def pause(self) -> float:
        """The wait before the next poll; DeadlineExceededError naming what is missing once the time is up."""
        now = time.monotonic()
        if now >= self.deadline:
            raise DeadlineExceededError(f"{self.url} not ready after {self.timeout:.3g} s: {self._waiting}")
        if now - self._last_log >= 5.0:
            log.info("waiting for %s: %s", self.url, self._waiting)
            self._last_log = now
        delay = min(self._delay, max(self.deadline - now, 0.0))
        self._delay = min(self._delay * 2, 0.5)
        return delay


# -- argument checks -------------------------------------------------------------------------------------------
def _check_k(k: int | None) -> None:
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise InvalidArgumentError(f"k must be a positive int (got {k!r})")


def _items(value: Any, what: str, ordered: bool) -> list[Any] | None:
    """``value``'s items as a list if it holds several, else None (one str, bytes or number; None).

    Taken: any sequence but str/bytes (list, tuple, range), numpy arrays and pandas Series or Index (through
    ``tolist()``: items come back as Python values, a 2-D array's rows as lists; numpy and pandas are never
    imported), and any other iterable, generators included (consumed once). A set or frozenset, whose order is
    undefined, is taken where order does not matter (``ordered`` False: one user's exclusions, one history,
    sent sorted so that the same set makes the same request) and refused where each item is a query whose answer
    comes back at its position. A mapping is refused (iterating it gives its keys only), and so is a 2-D table
    without ``tolist()`` (a pandas DataFrame: pass a column, or ``.to_numpy()``)."""
    if value is None or isinstance(value, (str, bytes)):
        return None
    if isinstance(value, Mapping):
        raise InvalidArgumentError(
            f"{what} must be a list, not a {type(value).__name__} (iterating it gives its keys only): pass "
            f"list(d.keys()) or list(d.values())"
        )
    if isinstance(value, AbstractSet) and not isinstance(value, KeysView):  # a dict's keys keep their order
        if ordered:
            raise InvalidArgumentError(
                f"{what} must be a list, not a {type(value).__name__}: a set has no order, and the answers come "
                f"back in the order of the queries; pass sorted(...) or a list"
            )
        return sorted(value, key=_sort_key)
    if isinstance(value, (Sequence, KeysView)):
        return list(value)
    tolist = getattr(value, "tolist", None)
    if callable(tolist):
        items = tolist()  # a numpy scalar's, or a 0-d array's, is one value: not a list
        return items if isinstance(items, list) else None
    if getattr(value, "ndim", 1) != 1:
        raise InvalidArgumentError(
            f"{what} must be a list (got a {getattr(value, 'ndim', '?')}-D {type(value).__name__}): pass a "
            f"column, or .to_numpy()"
        )
    if isinstance(value, Iterable):
        return list(value)
    return None


def _sort_key(item: Any) -> tuple[str, str]:
    """Sorts a set of str, bytes and ints alike (by type name, then text): one order for one set."""
    text = item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
    return (type(item).__name__, text)


def _sequence(value: Any, what: str, ordered: bool = True) -> list[Any]:
    items = _items(value, what, ordered)
    if items is None:
        raise InvalidArgumentError(
            f"{what} must be a list or another iterable (got {type(value).__name__}: {value!r:.200})"
        )
    return items


def _scalar(value: Any) -> Any:
    """A 0-d numpy array as its one Python value (``np.array("42")``); anything else as it is."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "tolist", None)):
        return value.tolist()
    return value


def _is_key(value: Any) -> bool:
    """A str or bytes, or an int of any kind (numpy's too) but not a bool."""
    return isinstance(value, (str, bytes)) or (isinstance(value, numbers.Integral) and not isinstance(value, bool))


def _text(value: str | bytes, what: str) -> str:
    """A str as it is; bytes (numpy's ``S`` arrays, TF Serving's own string type) decoded as UTF-8."""
    if isinstance(value, str):
        return str(value)  # numpy.str_ too, as a plain str
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidArgumentError(f"{what} must be UTF-8 text (got {value!r:.200})") from exc


def _key(value: Any, what: str) -> str:
    if not _is_key(value):
        raise InvalidArgumentError(f"a {what} is a str or an int (got {type(value).__name__}: {value!r})")
    return _text(value, f"a {what}") if isinstance(value, (str, bytes)) else str(int(value))


def _keys(value: Any, what: str, name: str) -> tuple[bool, list[str]]:
    """(one key?, the keys as str): one str, bytes or int id, or a list (any iterable) of them."""
    value = _scalar(value)
    single = _is_key(value)
    return single, [_key(v, what) for v in ([value] if single else _sequence(value, name))]


def _ids(value: Any, what: str) -> list[str]:
    """One row of catalogue ids (exclusions, a history: order does not matter, a set is taken)."""
    return [_key(v, "movie id") for v in _sequence(value, what, ordered=False)]


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
    """(one row?, the rows): ``value`` is one collection of ``entries`` (an empty one too) or a list of such
    collections, told apart by its items (any collection among them: several rows), or by ``ndim`` for an array
    (2-D: rows, even none). One row may be a set (order does not matter in it); the list of rows may not."""
    ndim = getattr(value, "ndim", 1)
    items = _sequence(value, what, ordered=ndim == 2)
    rows = [_items(item, f"{what}[{i}]", ordered=False) for i, item in enumerate(items)]
    if ndim == 2 or any(row is not None for row in rows):
        if isinstance(value, AbstractSet):
            _sequence(value, what, ordered=True)  # several rows in a set: refused, as for queries
        return False, [entries(items[i] if row is None else row, f"{what}[{i}]") for i, row in enumerate(rows)]
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


def _titles(value: Any, what: str, ordered: bool = False) -> list[str]:
    """Titles as str (bytes decoded as UTF-8): one row (a set is taken, sorted) or, ``ordered``, queries."""
    items = _sequence(value, what, ordered)
    bad = [v for v in items if not isinstance(v, (str, bytes))]
    if bad:
        raise InvalidArgumentError(f"{what} must hold strings (got {bad[0]!r})")
    return [_text(v, f"{what}'s titles") for v in items]


# -- reading answers -------------------------------------------------------------------------------------------
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
