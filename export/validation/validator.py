"""``validate``: every check of export/validation on one staged model (TFX InfraValidator's run): its spec's
requests answered in memory and in a fresh process (export/validation/runners.py), compared
(export/validation/checks.py), and each index's recall held to the threshold.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from export.validation import ValidationError, checks, runners
from export.validation.requests import Request
from export.validation.specs import ModelSpec

logger = logging.getLogger(__name__)


def validate(
    spec: ModelSpec,
    staged: Path,
    module,
    requests: list[Request],
    *,
    k: int,
    recall_threshold: float,
    tolerance: float,
    timeout_s: float,
) -> dict:
    """Run every check; return {"recall_at_10": ..., "recall_k": ..., "recall_by_signature": {...}} or raise
    ValidationError naming what differed."""
    logger.info("validating %s in a fresh process", spec.name)
    expected = runners.in_memory(module, requests)
    actual = runners.in_fresh_process(staged, requests, timeout_s)
    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
    id_of = dict(zip(decode(module.titles.numpy()).tolist(), decode(module.ids.numpy()).tolist(), strict=True))
    vectors = spec.vectors
    problems = checks.compare(
        spec.name,
        requests,
        expected,
        actual,
        k,
        tolerance,
        catalogue=frozenset(vectors.titles.tolist()),
        id_of=id_of,
        query_keys=frozenset(vectors.query_keys.tolist()),
    )
    recall_k = min(10, k)
    recalls = {}
    for request, answer in zip(requests, actual, strict=True):
        value = spec.recall(request, answer["movie_titles"], recall_k)
        if value is not None:
            recalls[request.signature_name] = value
    for signature, value in recalls.items():
        if value < recall_threshold:
            where = "" if signature == "serving_default" else f" ({signature}'s index)"
            problems.append(
                f"{spec.name}: recall@{recall_k} against exact search is {value:.4f} < threshold "
                f"{recall_threshold}{where} (raise --scann-leaves-to-search or --scann-reorder, or "
                f"use --index brute_force)"
            )
    recall = min(recalls.values()) if recalls else None
    if problems:
        raise ValidationError("; ".join(problems))
    logger.info("%s validated: recall@%d = %.4f", spec.name, recall_k, recall if recall is not None else float("nan"))
    return {
        "recall_at_10": recall,
        "recall_k": recall_k,
        "recall_by_signature": {name: round(value, 6) for name, value in recalls.items()},
    }
