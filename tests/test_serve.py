"""`mptune serve`: a real uvicorn server on 127.0.0.1 (started and stopped by each test) answering real HTTP
requests: predictions equal `Predictor.predict`'s, concurrent mixed-task requests share batches, every bad
request gets a 4xx with one message and the server keeps running, shutdown answers what is queued."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
import uvicorn

from mptune.config import ServeArgs
from mptune.predict import Predictor
from mptune.prompts import vocab_init
from mptune.serve import build_app

from test_predict_cli import S1, S2, mixed_rows

TASKS = ("rte", "cola", "mrpc")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def running(predictor: Predictor, **settings):
    """A uvicorn server on a free 127.0.0.1 port in a thread: yields its base URL and the app; stops it after."""
    args = ServeArgs(port=free_port(), **settings)
    app = build_app(predictor, args)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=args.port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started:
            break
        time.sleep(0.01)
    assert server.started, "the server did not start"
    try:
        yield f"http://127.0.0.1:{args.port}", app
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        assert not thread.is_alive()


@pytest.fixture(scope="module")
def predictor(llama_backbone) -> Predictor:
    g = torch.Generator().manual_seed(5)
    return Predictor(llama_backbone, {t: vocab_init(llama_backbone.embeddings, 4, g) * 3 for t in TASKS})


def test_predict_tasks_and_health(predictor):
    rows = mixed_rows(6)
    expected = predictor.predict(rows, scores=True)
    with running(predictor) as (url, _):
        one = httpx.post(f"{url}/predict", json=rows[0])
        assert one.status_code == 200 and one.json() == {k: v for k, v in expected[0].items() if k != "scores"}
        many = httpx.post(f"{url}/predict", params={"scores": "true"}, json=rows)
        assert many.status_code == 200
        got = many.json()
        assert [g["prediction"] for g in got] == [e["prediction"] for e in expected]
        for g, e in zip(got, expected):
            assert g["scores"].keys() == e["scores"].keys()
            assert all(abs(g["scores"][k] - e["scores"][k]) < 1e-4 for k in e["scores"])
        tasks = httpx.get(f"{url}/tasks").json()
        assert [t["task"] for t in tasks["tasks"]] == list(TASKS) and tasks["prompt_length"] == 4
        assert tasks["tasks"][0]["label_words"] == ["yes", "no"] and tasks["tasks"][1]["fields"] == ["sentence"]
        assert tasks["tasks"][0]["parameters"] == 4 * 32 and tasks["batching"]["max_batch"] == 32
        assert httpx.get(f"{url}/health").json()["status"] == "ok"


def test_concurrent_mixed_task_requests_share_batches(predictor):
    rows = mixed_rows(24)
    expected = [e["prediction"] for e in predictor.predict(rows)]
    with running(predictor, max_batch=8, max_wait_ms=200) as (url, app):
        with httpx.Client() as client, ThreadPoolExecutor(12) as pool:
            answers = list(pool.map(lambda r: client.post(f"{url}/predict", json=r), rows))
        assert [a.status_code for a in answers] == [200] * 24
        assert [a.json()["prediction"] for a in answers] == expected
        assert [a.json()["task"] for a in answers] == [r["task"] for r in rows]
        batcher = app.state.batcher
        assert batcher.examples == 24 and batcher.batches < 24  # requests were batched together
        assert httpx.get(f"{url}/health").json()["examples"] == 24


def test_generation_rows_are_answered_with_their_text_beside_classification_rows(llama_backbone):
    g = torch.Generator().manual_seed(8)
    both = Predictor(llama_backbone, {t: vocab_init(llama_backbone.embeddings, 4, g) * 3 for t in ("squad", "rte")})
    context = f"{S1} {S2}"
    rows = [{"task": "squad", "question": "Who sees the ball ?", "context": context},
            mixed_rows(1)[0],
            {"task": "squad", "context": context, "qas": [{"question": "Who eats ?"}, {"question": "Who sees ?"}]}]
    expected = both.predict(rows)
    assert isinstance(expected[0]["prediction"], str) and len(expected[2]["prediction"]) == 2
    with running(both) as (url, _):
        answer = httpx.post(f"{url}/predict", params={"scores": "true"}, json=rows)
        assert answer.status_code == 200
        got = answer.json()
        assert [x["task"] for x in got] == ["squad", "rte", "squad"]
        assert [x["prediction"] for x in got] == [e["prediction"] for e in expected]  # the texts, a list for two
        assert "scores" not in got[0] and "scores" not in got[2] and set(got[1]["scores"]) == {"yes", "no"}
        tasks = {t["task"]: t for t in httpx.get(f"{url}/tasks").json()["tasks"]}
        assert tasks["squad"]["generation"] and tasks["squad"]["fields"] == ["question", "context"]
        assert tasks["squad"]["label_words"] == []


BAD = [
    ("unknown task", json.dumps({"task": "sst2", "sentence": S1}), 422, "task 'sst2', which has no prompt here"),
    ("no task", json.dumps({"sentence": S1}), 422, "names no task"),
    ("missing field", json.dumps({"task": "rte", "sentence1": S1}), 422, "no field 'sentence2'"),
    ("second row bad", json.dumps([{"task": "cola", "sentence": S1}, {"task": "rte", "sentence2": S2}]), 422,
     "request line 2 has no field 'sentence1'"),
    ("malformed JSON", '{"task": "rte", ', 400, "not valid JSON"),
    ("not a row", json.dumps(["rte"]), 400, "expected a row"),
    ("empty list", "[]", 400, "expected a row"),
    ("too many rows", json.dumps([{"task": "cola", "sentence": S1}] * 5), 413, "over serve.max_rows (4)"),
    ("oversized body", json.dumps({"task": "cola", "sentence": "the cat " * 400}), 413, "over serve.max_body_bytes"),
]


def test_every_bad_request_gets_one_clear_4xx_and_the_server_keeps_running(predictor):
    with running(predictor, max_rows=4, max_body_bytes=2000) as (url, _):
        for name, body, status, words in BAD:
            r = httpx.post(f"{url}/predict", content=body, headers={"content-type": "application/json"})
            assert r.status_code == status, (name, r.text)
            assert list(r.json()) == ["error"] and words in r.json()["error"], (name, r.text)
        assert httpx.get(f"{url}/nothing").status_code == 404 and "error" in httpx.get(f"{url}/nothing").json()
        assert httpx.get(f"{url}/predict").status_code == 405
        bad = httpx.post(f"{url}/predict", params={"scores": "maybe"}, json={"task": "cola", "sentence": S1})
        assert bad.status_code == 422 and "bad request parameter (query.scores" in bad.json()["error"]
        ok = httpx.post(f"{url}/predict", json={"task": "cola", "sentence": S1})
        assert ok.status_code == 200 and ok.json()["prediction"] in ("no", "yes")


def test_shutdown_answers_queued_requests(predictor):
    rows = mixed_rows(6)
    with ThreadPoolExecutor(6) as pool:
        with running(predictor, max_batch=64, max_wait_ms=1500) as (url, app):
            futures = [pool.submit(httpx.post, f"{url}/predict", json=r, timeout=60) for r in rows]
            deadline = time.monotonic() + 30
            while len(app.state.batcher.pending) < 6 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(app.state.batcher.pending) == 6  # all queued, their batch still filling
        # leaving `running` stopped the server (its thread ended) while the rows were queued
        answers = [f.result() for f in futures]
    assert [a.status_code for a in answers] == [200] * 6
    assert [a.json()["prediction"] for a in answers] == [e["prediction"] for e in predictor.predict(rows)]


def test_serve_command_refuses_missing_prompts_before_loading_the_model(tmp_path, capsys, llama_dir):
    from test_cli import assert_user_error, cli

    code, _, err = cli(capsys, "serve", "--prompts", str(tmp_path / "none.safetensors"), "--model.name",
                       str(llama_dir))
    assert_user_error(code, err, "none.safetensors does not exist")
    code, _, err = cli(capsys, "serve", "--prompts", str(tmp_path), "--model.name", str(llama_dir))
    assert_user_error(code, err, "is not a run directory")
