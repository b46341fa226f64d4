"""Validation before publish, after TFX's InfraValidator: a request builder, a runner, checks.

The staged SavedModel is loaded in a fresh ``sys.executable`` process under a deadline, through
``serving.bundle`` (tag ``serve``, warmup replayed, signatures called by tensor name). Requests built from
the model's own signatures are answered there and compared with the in-memory module:

- identical top-K titles (ties within ``score_tolerance`` may swap) and scores within the tolerance;
- every row holds K titles (an ``exclude_seen`` row fewer only when its exclusions leave fewer than K of
  the catalogue: the servable's documented "" slots); ``exclude_seen`` never returns an excluded title;
  ``similar_movies`` never returns the query; unknown keys get an answer;
- ``by_history`` never returns a title of the row's history, and answers histories of known users, an
  empty one, an all-unknown one and a mixed one;
- ``fallback`` is true exactly for the rows of unknown keys and histories without a known title, and
  ``unmatched`` counts the exclusion or history entries that are no title of the catalogue;
- the by-id signatures (``exclude_seen_by_id``, ``by_id``, ``by_history_ids``), asked with the catalogue ids
  of the titles in the title-keyed requests, answer exactly as those do;
- recall@10 of the served top-K against exact search over the same vectors >= the threshold, for each index
  (``by_history``'s: its queries computed from the histories as export/history.py does).

Any failure raises ``ValidationError`` whose message says what differed; the child's stderr is logged.

- export/validation/requests.py: ``Request``, typed: a signature's inputs and what its answer owes;
- export/validation/specs.py: one spec per served model (``RetrievalSpec``, ``SimilarMoviesSpec``) that builds
  its module, its requests and its recall checks;
- export/validation/runners.py: answers in memory and in a fresh process (export/validate_child.py);
- export/validation/checks.py: what differs between two answers, and where an answer breaks the contract;
- export/validation/validator.py: ``validate``, all of it for one staged model.
"""


class ValidationError(RuntimeError):
    """The staged version does not answer as the in-memory model does (nothing is published)."""
