"""--enable_batching: the scheduler on its own (fake model functions), then python -m serving batching real
exported models over real sockets, as TF Serving's BatchingSession does."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import text_format

import server_process as sp
from serving.batching import BatchingOptions, BatchScheduler, batching_parameters_class, merge_inputs
from serving.errors import StatusError


def strings(rows):
    return np.array(rows, dtype=object)


# --------------------------------------------------------------------------- merging (batching_util.cc)
def test_padding_repeats_each_calls_own_first_element():
    merged = merge_inputs([[strings([["A", "B", "C"]])], [strings([["D"], ["E"]])]], ["x:0"], pad=True)
    assert merged[0].tolist() == [["A", "B", "C"], ["D", "D", "D"], ["E", "D", "D"]]


def test_without_padding_different_shapes_fail_the_batch_with_tf_servings_message():
    with pytest.raises(StatusError) as info:
        merge_inputs([[strings([["A", "B"]])], [strings([["C"]])]], ["titles:0"], pad=False)
    assert info.value.code == "FAILED_PRECONDITION"
    assert info.value.message.startswith(
        "Tensors with name 'titles:0' from different tasks have different shapes and padding is turned off."
    )


def test_a_batch_is_padded_to_an_allowed_size_with_the_last_calls_first_row():
    merged = merge_inputs([[np.array([1.0, 2.0])], [np.array([3.0])]], ["x:0"], pad=False, padding_rows=2)
    assert merged[0].tolist() == [1.0, 2.0, 3.0, 3.0, 3.0]


# --------------------------------------------------------------------------- the scheduler
class Model:
    """A fake signature: y = 10 x, recording the batch sizes it ran."""

    def __init__(self, delay: float = 0.0) -> None:
        self.sizes: list[int] = []
        self.delay = delay

    def __call__(self, x):
        self.sizes.append(len(x))
        time.sleep(self.delay)
        return [x * 10]


@pytest.fixture
def scheduler_of():
    made = []

    def make(**options):
        scheduler = BatchScheduler(BatchingOptions(**options))
        made.append(scheduler)
        return scheduler

    yield make
    for scheduler in made:
        scheduler.stop()


def test_concurrent_calls_run_as_one_batch_and_each_gets_its_own_rows(scheduler_of):
    scheduler = scheduler_of(max_batch_size=16, batch_timeout_micros=500_000, num_batch_threads=1)
    model = Model()
    queue = scheduler.queue(model, ["x:0"])
    calls = [np.arange(i, i + 1 + i % 3, dtype=np.float32) for i in range(6)]  # 1 to 3 rows each
    with ThreadPoolExecutor(len(calls)) as pool:
        answers = list(pool.map(lambda x: scheduler.submit(queue, [x], None)[0], calls))
    assert [a.tolist() for a in answers] == [(x * 10).tolist() for x in calls]
    assert sum(model.sizes) == sum(len(x) for x in calls) and len(model.sizes) < len(calls)


def test_a_full_batch_runs_without_waiting_for_the_timeout(scheduler_of):
    scheduler = scheduler_of(max_batch_size=2, batch_timeout_micros=3_600_000_000, num_batch_threads=1)
    queue = scheduler.queue(Model(), ["x:0"])
    pool = ThreadPoolExecutor(1)  # an hour's batch timeout: only a full batch can answer at all
    try:
        answer = pool.submit(scheduler.submit, queue, [np.array([1.0, 2.0])], None)
        assert answer.result(timeout=60)[0].tolist() == [10.0, 20.0]
    finally:
        pool.shutdown(wait=False)


def test_allowed_batch_sizes_pad_the_batch_and_the_padding_is_dropped(scheduler_of):
    scheduler = scheduler_of(max_batch_size=4, allowed_batch_sizes=(2, 4), num_batch_threads=1)
    model = Model()
    queue = scheduler.queue(model, ["x:0"])
    assert scheduler.submit(queue, [np.array([1.0, 2.0, 3.0])], None)[0].tolist() == [10.0, 20.0, 30.0]
    assert model.sizes == [4]


def test_a_call_larger_than_max_batch_size_is_refused(scheduler_of):
    scheduler = scheduler_of(max_batch_size=4)
    queue = scheduler.queue(Model(), ["x:0"])
    with pytest.raises(StatusError) as info:
        scheduler.submit(queue, [np.zeros(5)], None)
    assert (info.value.code, info.value.message) == (
        "INVALID_ARGUMENT",
        "Task size 5 is larger than maximum input batch size 4",
    )
    pair = scheduler.queue(Model(), ["a:0", "b:0"])
    with pytest.raises(StatusError, match=r"^Batching Run\(\) input tensors must have equal 0th-dimension size$"):
        scheduler.submit(pair, [np.zeros(2), np.zeros(3)], None)
    with pytest.raises(StatusError, match=r"^Batching Run\(\) input tensors must have at least one dimension$"):
        scheduler.submit(pair, [np.zeros(2), np.float32(1)], None)


def test_a_call_that_finds_the_queue_full_is_unavailable(scheduler_of):
    scheduler = scheduler_of(
        max_batch_size=2, batch_timeout_micros=60_000_000, max_enqueued_batches=1, num_batch_threads=1
    )
    queue = scheduler.queue(Model(), ["x:0"])
    waiting = threading.Thread(target=scheduler.submit, args=(queue, [np.zeros(1)], None))
    waiting.start()  # one row in the open batch, waiting for the 60 s timeout
    deadline = time.monotonic() + 10
    while not queue.batches[-1] and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(StatusError) as info:
        scheduler.submit(queue, [np.zeros(2)], None)
    assert info.value.code == "UNAVAILABLE"
    assert info.value.message == (
        "The batch scheduling queue to which this task was submitted is full; currently "
        "1 batches enqueued and max_enqueued_batches is 1"
    )
    scheduler.stop()  # runs what is queued
    waiting.join(10)
    assert not waiting.is_alive()


def test_a_batch_whose_every_deadline_passed_in_the_queue_is_not_run(scheduler_of):
    scheduler = scheduler_of(max_batch_size=8, num_batch_threads=1)
    model = Model()
    queue = scheduler.queue(model, ["x:0"])
    with pytest.raises(StatusError) as info:
        scheduler.submit(queue, [np.zeros(1)], time.monotonic() - 1)
    assert (info.value.code, info.value.message) == (
        "RESOURCE_EXHAUSTED",
        "Run() timeout exceeded while waiting in batching queue",
    )
    assert model.sizes == []


def test_a_model_error_reaches_every_call_of_the_batch(scheduler_of):
    scheduler = scheduler_of(max_batch_size=8, batch_timeout_micros=300_000, num_batch_threads=1)

    def broken(x):
        raise StatusError("INVALID_ARGUMENT", "bad input")

    queue = scheduler.queue(broken, ["x:0"])
    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(scheduler.submit, queue, [np.zeros(1)], None) for _ in range(3)]
        for future in futures:
            with pytest.raises(StatusError, match="bad input"):
                future.result()


def test_options_take_tf_servings_defaults_and_checks():
    options = BatchingOptions.from_parameters(batching_parameters_class()())
    assert (options.max_batch_size, options.batch_timeout_micros, options.max_enqueued_batches) == (1000, 0, 10)
    params = text_format.Parse(
        "max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 6", batching_parameters_class()()
    )
    with pytest.raises(
        StatusError, match="Last entry in allowed_batch_sizes must match max_batch_size; last entry was 6; expected 8"
    ):
        BatchingOptions.from_parameters(params)


# --------------------------------------------------------------------------- python -m serving
BATCHING = """max_batch_size { value: 8 }
batch_timeout_micros { value: 1000000 }
max_enqueued_batches { value: 16 }
num_batch_threads { value: 2 }
pad_variable_length_inputs: true
"""


@pytest.fixture(scope="module")
def server(model_store, tmp_path_factory):
    folder = tmp_path_factory.mktemp("batching")
    (folder / "batching.config").write_text(BATCHING)
    with sp.ServerProcess(
        f"--model_base_path={model_store / 'retrieval'}",
        "--model_name=retrieval",
        "--enable_batching",
        f"--batching_parameters_file={folder / 'batching.config'}",
        "--enable_model_warmup=false",
        rest=True,
    ) as s:  # warmup would wait 1 s a record
        s.wait_for_line("Exporting HTTP/REST API at", timeout=60)
        yield s


def rest(server, body: dict) -> requests.Response:
    return requests.post(
        f"http://127.0.0.1:{server.rest_port}/v1/models/retrieval:predict", data=json.dumps(body), timeout=60
    )


def exclude_seen(rows: list[list[str]], users: list[str]) -> dict:
    return {"signature_name": "exclude_seen", "inputs": {"user_id": users, "exclude_titles": rows}}


@pytest.mark.slow
def test_concurrent_requests_are_batched_and_padded_as_tf_serving_pads(server):
    # exclude_seen's own best title for user 2 (its ranking may blend EASE in: export/selection.py)
    best_of_2 = rest(server, exclude_seen([[""]], ["2"])).json()["outputs"]["movie_titles"][0][0]
    narrow_plain = exclude_seen([[best_of_2], ["no such movie"]], ["1", "2"])  # exclude_titles[0][0] is a title
    narrow_guarded = exclude_seen([["", best_of_2], ["", "no such movie"]], ["1", "2"])  # as client/ sends it
    wide = exclude_seen([["a", "b", "c", "d", "e", "f"]], ["3"])
    alone = rest(server, narrow_guarded).json()["outputs"]["movie_titles"]
    assert best_of_2 in alone[1]

    def together(narrow):
        with ThreadPoolExecutor(2) as pool:  # both arrive within the 1 s batch timeout: one batch
            answers = list(pool.map(lambda body: rest(server, body), [narrow, wide]))
        assert [a.status_code for a in answers] == [200, 200]
        return answers[0].json()["outputs"]["movie_titles"]

    assert together(narrow_guarded) == alone
    # TF Serving pads the narrow request with its first element: user 2 then loses user 1's exclusion too
    assert best_of_2 not in together(narrow_plain)[1]


def test_a_request_larger_than_max_batch_size_gets_tf_servings_error(server):
    answer = rest(server, {"instances": [str(u) for u in range(1, 10)]})
    assert answer.status_code == 400
    assert answer.json() == {"error": "Task size 9 is larger than maximum input batch size 8"}
    with pytest.raises(grpc.RpcError) as info:
        server.predict("retrieval", {"user_id": [str(u).encode() for u in range(1, 10)]})
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == "Task size 9 is larger than maximum input batch size 8"
