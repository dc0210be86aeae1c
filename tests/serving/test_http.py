"""`tunewise serve`: a real uvicorn server on loopback in front of tiny trained runs of every task.

Every status code the server answers, concurrent requests answered in order and equal to predict(),
batching across clients, the queue limit, the API key, readiness while the model loads, the metrics,
and each task's payloads (texts, pairs, word lists, question/context objects, base64 images, chats).
"""

from __future__ import annotations

import base64
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from conftest import assert_close, build_tokenizer, invoke_cli, make_config, read_json, write_jsonl
from PIL import Image

import tunewise
from tunewise.errors import ConfigError, TunewiseError
from tunewise.serving.batching import BatchLimits
from tunewise.serving.http import ServerSettings, run_server
from tunewise.serving.predictor import FineTunedModel, load

POSITIVE = ["the film was really great overall", "this book was so excellent today", "a good show"]
NEGATIVE = ["the movie was very awful again", "the hotel was rather terrible honestly", "a bad meal"]
TEXTS = POSITIVE + NEGATIVE
LEARN = {"epochs": 5, "learning_rate": 3e-3}


def train(config: dict) -> Path:
    tunewise.train(config, show_progress=False)
    return Path(config["output_dir"])


@pytest.fixture(scope="module")
def cls_run(tmp_path_factory, tiny_model_dir, single_label_data) -> Path:
    folder = tmp_path_factory.mktemp("serve-cls")
    return train(make_config(folder, tiny_model_dir, single_label_data, train=LEARN))


@pytest.fixture(scope="module")
def cls_model(cls_run) -> FineTunedModel:
    return load(cls_run, device="cpu")


def same_predictions(served: list[dict], expected: list[dict]) -> None:
    """Equal labels, texts and spans; scores to float32 precision (JSON carries them as float64)."""
    assert len(served) == len(expected)
    for got, want in zip(served, expected, strict=True):
        assert_close(got, want)


# ------------------------------------------------------------------------------------------ predict, in order


def test_predict_answers_what_predict_returns_in_input_order(serving, cls_run, cls_model):
    server = serving(cls_run)
    response = server.post(TEXTS)
    assert response.status_code == 200
    same_predictions(response.json()["predictions"], cls_model.predict(TEXTS))
    assert [p["label"] for p in response.json()["predictions"]] == ["positive"] * 3 + ["negative"] * 3
    one = server.post(TEXTS[4])  # one string is one input
    assert one.status_code == 200
    same_predictions(one.json()["predictions"], cls_model.predict([TEXTS[4]]))


def test_concurrent_clients_are_batched_together_and_each_gets_its_own_answers(serving, cls_run, cls_model):
    server = serving(cls_run, ServerSettings(batching=BatchLimits(max_wait_ms=50)))
    rng = random.Random(0)
    requests = [rng.sample(TEXTS, rng.randint(1, len(TEXTS))) for _ in range(24)]
    with ThreadPoolExecutor(max_workers=12) as pool:
        responses = list(pool.map(server.post, requests))
    for inputs, response in zip(requests, responses, strict=True):
        assert response.status_code == 200
        same_predictions(response.json()["predictions"], cls_model.predict(inputs))
    metrics = server.get("/metrics").text
    model_calls = metric_value(metrics, "tunewise_batch_inputs_count")
    assert model_calls < len(requests)  # requests shared model calls
    assert metric_value(metrics, "tunewise_batch_inputs_sum") == sum(len(inputs) for inputs in requests)
    assert metric_value(metrics, 'tunewise_requests_total{route="/predict",status="200"}') == len(requests)


def metric_value(exposition: str, name: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} is not in /metrics:\n{exposition}")


def test_a_batch_stays_within_the_token_and_input_budgets(serving, cls_run, cls_model):
    server = serving(cls_run, ServerSettings(batching=BatchLimits(max_batch_inputs=4, max_wait_ms=100)))
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(server.post, [TEXTS[:2]] * 8))
    assert all(response.status_code == 200 for response in responses)
    metrics = server.get("/metrics").text
    assert metric_value(metrics, 'tunewise_batch_inputs_bucket{le="4.0"}') == metric_value(
        metrics, "tunewise_batch_inputs_count"
    )  # never more than 4 inputs in one call
    assert metric_value(metrics, "tunewise_batch_inputs_count") >= 4
    # two texts are 16 tokens with [CLS] and [SEP]: a budget of 20 tokens holds one such request per call
    tight = serving(cls_run, ServerSettings(batching=BatchLimits(max_batch_tokens=20, max_wait_ms=100)))
    with ThreadPoolExecutor(max_workers=8) as pool:
        responses = list(pool.map(tight.post, [TEXTS[:2]] * 8))
    assert all(response.status_code == 200 for response in responses)
    metrics = tight.get("/metrics").text
    assert metric_value(metrics, "tunewise_batch_inputs_count") == 8
    assert metric_value(metrics, "tunewise_batch_tokens_sum") == 8 * 16


# ------------------------------------------------------------------------------------------ status codes


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b'{"inputs": ["unterminated', "body", "JSON"),
        (b'{"inputs": 5}', "inputs", "list"),
        (b'{"texts": ["a"]}', "inputs", "required"),
        (b'{"inputs": ["a"], "extra": 1}', "extra", "not permitted"),
        (b'{"inputs": []}', "inputs", "empty"),
        (b'{"inputs": ["a good film", ["a", "pair"]]}', "inputs[1]", "list of strings"),
        (b'{"inputs": ["a good film", 7]}', "inputs[1]", "list of strings"),
    ],
)
def test_malformed_requests_are_422_with_the_field_named(serving, cls_run, body, field, words):
    server = serving(cls_run)
    response = httpx.post(f"{server.url}/predict", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["field"].startswith(field)
    assert words.lower() in response.json()["error"].lower()


def test_requests_over_the_limits_are_413(serving, cls_run):
    server = serving(cls_run, ServerSettings(max_request_inputs=4, max_request_bytes=2_000))
    too_many = server.post(TEXTS[:5])
    assert too_many.status_code == 413
    assert "5 in one request" in too_many.json()["error"] and "4" in too_many.json()["error"]
    too_big = server.post(["word " * 500])
    assert too_big.status_code == 413
    assert "bytes" in too_big.json()["error"]
    assert server.post(TEXTS[:4]).status_code == 200


def test_unknown_routes_are_404_and_wrong_methods_405(serving, cls_run):
    server = serving(cls_run)
    missing = server.get("/nowhere")
    assert missing.status_code == 404
    assert "POST /predict" in missing.json()["error"]
    wrong_method = server.get("/predict")
    assert wrong_method.status_code == 405
    assert "does not take GET" in wrong_method.json()["error"]


def test_a_model_error_is_500_without_a_traceback_and_the_server_stays_up(serving, cls_run, caplog):
    def failing_load(folder: Path) -> FineTunedModel:
        model = load(folder, device="cpu")
        predict_frame = model.predict_frame

        def fails_on_boom(frame, explain=None):
            if frame.iloc[:, 0].str.contains("boom").any():
                raise RuntimeError("shape mismatch in layer 3")
            return predict_frame(frame, explain)

        model.predict_frame = fails_on_boom  # type: ignore[method-assign]
        return model

    server = serving(cls_run, ServerSettings(batching=BatchLimits(max_wait_ms=100)), loader=failing_load)
    with ThreadPoolExecutor(max_workers=2) as pool:  # a good request batched with the failing one still succeeds
        failed, good = pool.map(server.post, [["boom"], TEXTS[:2]])
    assert failed.status_code == 500
    assert "RuntimeError" in failed.json()["error"]
    assert "Traceback" not in failed.text and "layer 3" not in failed.text
    assert good.status_code == 200
    assert server.post(TEXTS).status_code == 200
    assert "tunewise_model_errors_total 1.0" in server.get("/metrics").text


def test_a_full_queue_is_429_and_frees_up(serving, cls_run):
    release = threading.Event()

    def slow_load(folder: Path) -> FineTunedModel:
        model = load(folder, device="cpu")
        predict_frame = model.predict_frame

        def waits(frame, explain=None):
            release.wait(timeout=30)
            return predict_frame(frame, explain)

        model.predict_frame = waits  # type: ignore[method-assign]
        return model

    server = serving(cls_run, ServerSettings(batching=BatchLimits(max_queue_inputs=3, max_wait_ms=0)), loader=slow_load)
    with ThreadPoolExecutor(max_workers=2) as pool:
        first = pool.submit(server.post, TEXTS[:2])  # in the model
        time.sleep(0.3)
        second = pool.submit(server.post, TEXTS[:1])  # waits
        time.sleep(0.3)
        refused = server.post(TEXTS[:1])
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert "queue holds 3" in refused.json()["error"]
        depth = metric_value(server.get("/metrics").text, "tunewise_queue_inputs")
        assert depth == 3
        release.set()
        assert first.result().status_code == 200 and second.result().status_code == 200
    assert server.post(TEXTS[:1]).status_code == 200


def test_the_api_key_guards_every_route_but_health(serving, cls_run):
    server = serving(cls_run, ServerSettings(api_key="s3cret"))
    assert server.get("/health").status_code == 200
    for route in ("/info", "/metrics"):
        assert server.get(route).status_code == 401
    refused = server.post(TEXTS[:1])
    assert refused.status_code == 401 and "API key" in refused.json()["error"]
    assert server.post(TEXTS[:1], headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert server.post(TEXTS[:1], headers={"Authorization": "Bearer s3cret"}).status_code == 200
    assert server.post(TEXTS[:1], headers={"X-API-Key": "s3cret"}).status_code == 200
    assert server.get("/info", headers={"X-API-Key": "s3cret"}).status_code == 200


def test_health_is_503_until_the_model_is_loaded(serving, cls_run):
    loaded = threading.Event()

    def slow_load(folder: Path) -> FineTunedModel:
        loaded.wait(timeout=30)
        return load(folder, device="cpu")

    server = serving(cls_run, loader=slow_load, ready=False)
    loading = server.get("/health")
    assert loading.status_code == 503 and loading.json()["status"] == "loading"
    not_ready = server.post(TEXTS[:1])
    assert not_ready.status_code == 503 and "still loading" in not_ready.json()["error"]
    loaded.set()
    deadline = time.monotonic() + 30
    while server.get("/health").status_code != 200:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert server.post(TEXTS[:1]).status_code == 200


def test_a_model_that_cannot_be_loaded_stops_the_server_with_its_error(cls_run):
    def broken_load(folder: Path) -> FineTunedModel:
        raise ConfigError(f"{folder}/model: the saved model cannot be loaded (truncated safetensors).")

    with pytest.raises(TunewiseError, match="truncated safetensors"):
        run_server(cls_run, "127.0.0.1", 0, ServerSettings(), broken_load)


# ------------------------------------------------------------------------------------------ info, metrics, logs


def test_info_describes_the_task_labels_metrics_and_intended_use(serving, cls_run):
    info = serving(cls_run).get("/info").json()
    assert info["task"] == "text-classification"
    assert info["labels"] == ["negative", "positive"]
    assert "accuracy" in info["metrics"]["test"]
    assert info["runtime"] == "pytorch"
    assert info["intended_use"] and "Intended use" not in info["intended_use"]
    assert info["limits"]["max_request_inputs"] == ServerSettings().max_request_inputs


def test_inputs_are_logged_only_when_asked_and_then_redacted(serving, cls_run, caplog):
    text = "write to jane.doe@example.com about the film"
    caplog.set_level(logging.INFO, logger="tunewise.serve")
    serving(cls_run).post([text])
    assert "1 input(s)" in caplog.text and "jane.doe" not in caplog.text and "film" not in caplog.text
    caplog.clear()
    serving(cls_run, ServerSettings(log_inputs=True)).post([text])
    assert "<EMAIL_ADDRESS>" in caplog.text and "jane.doe" not in caplog.text and "about the film" in caplog.text


def test_an_onnx_export_is_served_by_onnx_runtime_with_the_same_answers(serving, cls_run, cls_model, tmp_path):
    tunewise.export(cls_run, output=tmp_path / "export")
    server = serving(tmp_path / "export")
    response = server.post(TEXTS)
    assert response.status_code == 200
    same_predictions(response.json()["predictions"], cls_model.predict(TEXTS))
    info = server.get("/info").json()
    assert info["runtime"] == "onnxruntime" and info["intended_use"]
    assert info["metrics"]["onnx_fp32"]["accuracy"] == info["metrics"]["pytorch"]["accuracy"]
    # no gradients, no attributions: said at once, with what to load instead
    assert info["explanations"]["available"] is False and "Load the run folder" in info["explanations"]["why"]
    refused = server.post(TEXTS, {"explain": True})
    assert refused.status_code == 422 and refused.json()["field"] == "explain"
    with pytest.raises(ConfigError, match=r"ONNX export, which computes no gradients.*Load the run folder"):
        load(tmp_path / "export").predict(TEXTS, explain=True)


def test_cli_serve_refuses_a_folder_that_is_not_a_run_and_onnx_without_an_export(tmp_path, cls_run):
    result = invoke_cli("serve", tmp_path)
    assert result.exit_code == 1
    assert "not a tunewise run folder" in result.output
    exposed = invoke_cli("serve", tmp_path, "--host", "0.0.0.0")
    assert exposed.exit_code == 1 and "without an API key" in exposed.output
    no_export = invoke_cli("serve", cls_run, "--onnx")
    assert no_export.exit_code == 1
    assert "has no ONNX export" in no_export.output and "tunewise export" in no_export.output


# ------------------------------------------------------------------------------------------ every task's payloads


def test_sentence_pairs_are_sent_as_two_text_lists(serving, tmp_path, tiny_model_dir, pair_data):
    config = make_config(tmp_path, tiny_model_dir, pair_data, train={"epochs": 1})
    config["data"].update(text_column="premise", text_pair_column="hypothesis")
    run = train(config)
    pairs = [["a good film", "a great book"], ["a good film", "an awful meal"]]
    server = serving(run)
    response = server.post(pairs)
    assert response.status_code == 200
    same_predictions(response.json()["predictions"], load(run, device="cpu").predict([tuple(p) for p in pairs]))
    single = server.post(["a good film"])
    assert single.status_code == 422 and single.json()["field"] == "inputs[0]"


NER_SENTENCES = [
    (["i", "saw", "the", "laptop"], ["O", "O", "O", "B-TECH"]),
    (["the", "senate", "was", "good"], ["O", "B-POL", "O", "O"]),
    (["you", "see", "the", "robot", "chip"], ["O", "O", "O", "B-TECH", "I-TECH"]),
]


def test_token_classification_takes_texts_and_word_lists(serving, tmp_path, tiny_model_dir):
    rows = [{"tokens": words, "tags": tags} for words, tags in NER_SENTENCES * 12]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", rows)}
    config = make_config(tmp_path, tiny_model_dir, files, task="token-classification", train={"epochs": 1})
    run = train(config)
    inputs = ["i saw the laptop", ["the", "senate", "was", "good"]]
    server = serving(run)
    response = server.post(inputs)
    assert response.status_code == 200
    same_predictions(response.json()["predictions"], load(run, device="cpu").predict(inputs))
    assert "entities" in response.json()["predictions"][0]
    explained = server.post(inputs, {"explain": True})  # one explanation per predicted entity
    assert explained.status_code == 200
    expected = load(run, device="cpu").predict(inputs, explain=True)
    same_predictions(explained.json()["predictions"], expected)
    for prediction in expected:
        assert len(prediction["explanation"]) == len(prediction["entities"])


def test_question_answering_takes_objects_and_pairs(serving, tmp_path, tiny_model_dir):
    rows = [
        {
            "question": "what was the prize ?",
            "context": f"it was fun . the prize was {word} .",
            "answers": {"text": [word], "answer_start": [27]},
        }
        for word in ("good", "bad", "film", "book") * 8
    ]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", rows)}
    config = make_config(
        tmp_path,
        tiny_model_dir,
        {**files, "max_length": 48},
        task="question-answering",
        question_answering={"stride": 16},
        train={"epochs": 1},
    )
    run = train(config)
    inputs = [
        {"question": "what was the prize ?", "context": "it was fun . the prize was good ."},
        ["what was the prize ?", "the prize was a book ."],
    ]
    server = serving(run)
    response = server.post(inputs)
    assert response.status_code == 200
    expected = load(run, device="cpu").predict([inputs[0], tuple(inputs[1])])
    same_predictions(response.json()["predictions"], expected)
    assert server.post([{"question": "what ?"}]).status_code == 422
    explained = server.post(inputs, {"explain": True})  # the answer's start and its end
    assert explained.status_code == 200
    same_predictions(explained.json()["predictions"], load(run, device="cpu").predict(
        [inputs[0], tuple(inputs[1])], explain=True))  # fmt: skip
    assert all(len(p["explanation"]) == 2 for p in explained.json()["predictions"])


def colour_png(colour: str, seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 90, (40, 40, 3))
    pixels[..., {"red": 0, "blue": 2}[colour]] += 150
    image = Image.fromarray(pixels.astype(np.uint8))
    from io import BytesIO

    buffer = BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_image_models_take_base64_images(serving, tmp_path):
    timm = pytest.importorskip("timm")
    from safetensors.torch import save_file

    for split, count in (("train", 12), ("test", 4)):
        for colour in ("red", "blue"):
            (tmp_path / split / colour).mkdir(parents=True)
            for i in range(count):
                (tmp_path / split / colour / f"{i}.png").write_bytes(colour_png(colour, hash((split, colour, i)) % 999))
    weights = tmp_path / "tiny.safetensors"
    save_file(timm.create_model("test_efficientnet").state_dict(), str(weights))
    config = make_config(
        tmp_path,
        weights,
        {"train": str(tmp_path / "train"), "test": str(tmp_path / "test")},
        task="image-classification",
        image={"architecture": "test_efficientnet", "image_size": 32},
        train={"epochs": 1},
    )
    run = train(config)
    images = [colour_png("red", 1), colour_png("blue", 2)]
    server = serving(run)
    response = server.post(
        [base64.b64encode(images[0]).decode(), "data:image/png;base64," + base64.b64encode(images[1]).decode()]
    )
    assert response.status_code == 200
    paths = []
    for i, data in enumerate(images):
        (tmp_path / f"sent{i}.png").write_bytes(data)
        paths.append(str(tmp_path / f"sent{i}.png"))
    same_predictions(response.json()["predictions"], load(run, device="cpu").predict(paths))
    explained = server.post([base64.b64encode(image).decode() for image in images], {"explain": True})
    assert explained.status_code == 200
    for prediction in explained.json()["predictions"]:
        (heat_map,) = prediction["explanation"]  # the PNG itself, not a path on the server
        assert heat_map["target"] == prediction["label"] and "heatmap_png" not in heat_map
        assert base64.b64decode(heat_map["heatmap_png_base64"])[:8] == b"\x89PNG\r\n\x1a\n"
    explained_run = read_json(run / "explanations.json")  # the train job: heat maps of the examples it shows
    assert explained_run["faithfulness"] is None and explained_run["examples"]
    assert all((run / example["heatmap_png"]).is_file() for example in explained_run["examples"])
    not_base64 = server.post(["not an image!"])
    assert not_base64.status_code == 422 and not_base64.json()["field"] == "inputs[0]"
    not_image = server.post([base64.b64encode(b"just some bytes").decode()])
    assert not_image.status_code == 422 and "not an image" in not_image.json()["error"]
    assert server.get("/info").json()["inputs"].startswith("an image file")


def test_chat_models_take_prompts_and_conversations_and_are_screened(serving, tmp_path, tiny_llama_dir):
    rows = [
        {"messages": [{"role": "user", "content": f"say {word}"}, {"role": "assistant", "content": word}]}
        for word in ("good", "bad", "great") * 10
    ]
    files = {
        "train": write_jsonl(tmp_path / "train.jsonl", rows),
        "test": write_jsonl(tmp_path / "test.jsonl", rows[:3]),
    }
    config = make_config(
        tmp_path,
        tiny_llama_dir,
        {**files, "chat_template": "chatml", "max_length": 48},
        task="causal-lm",
        train={"epochs": 3, "batch_size": 4, "learning_rate": 5e-3},
        generation={"max_new_tokens": 6},
        screen={"classifier": None, "blocklist": ["good"], "action": "redact"},
        safety={"prompts": None},
    )
    run = train(config)
    inputs = ["say good", [{"role": "user", "content": "say bad"}]]
    server = serving(run)
    response = server.post(inputs)
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    same_predictions(predictions, load(run, device="cpu").predict(inputs))
    assert all("generated_text" in p and "screen" in p for p in predictions)
    metrics = server.get("/metrics").text
    decisions = [f'tunewise_screen_decisions_total{{decision="{d}"}}' for d in ("passed", "flagged", "redacted")]
    assert sum(metric_value(metrics, name) for name in decisions) == len(inputs)  # every generation screened
    assert server.get("/info").json()["screen"]["action"] == "redact"


def test_seq2seq_models_take_source_texts(serving, tmp_path):
    from transformers import AutoModelForSeq2SeqLM, T5Config

    model_dir = tmp_path / "tiny-t5"
    tokenizer = build_tokenizer(model_dir)
    tokenizer.eos_token = "[SEP]"  # ends every target, as </s> does T5's
    tokenizer.save_pretrained(model_dir)
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=32,
        d_kv=16,
        d_ff=64,
        num_layers=2,
        num_heads=2,
        pad_token_id=pad,
        eos_token_id=eos,
        decoder_start_token_id=pad,
    )
    AutoModelForSeq2SeqLM.from_config(config).save_pretrained(model_dir)
    rows = [{"source": f"the {word} was good", "target": f"about the {word}"} for word in ("film", "book") * 12]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", rows), "test": write_jsonl(tmp_path / "test.jsonl", rows)}
    run = train(
        make_config(
            tmp_path,
            model_dir,
            files,
            task="seq2seq",
            train={"epochs": 1},
            generation={"max_new_tokens": 6},
            screen={"classifier": None},
            safety={"prompts": None},
        )
    )
    inputs = ["the film was good", "the book was good"]
    response = serving(run).post(inputs)
    assert response.status_code == 200
    same_predictions(response.json()["predictions"], load(run, device="cpu").predict(inputs))
    assert all("generated_text" in p for p in response.json()["predictions"])
