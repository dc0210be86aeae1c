"""Serving: `tunewise serve` against a transformers `pipeline` behind a plain FastAPI endpoint.

    python bench/serving.py                      # the model of runs/sms-spam (a short run is trained if missing)
    python bench/serving.py --run runs/my-run --clients 1 4 16 64 --requests 320

Both servers hold the same weights and run in their own process on this machine; the load comes from
this process over loopback: `clients` concurrent clients, each sending one SMS text per request and
the next as soon as the answer arrives (a closed loop), `requests` requests per level after a warm-up.
The pipeline server is the endpoint people write first: a sync FastAPI route calling the pipeline
(FastAPI runs it in its thread pool, so concurrent requests call the model concurrently, one text each).
tunewise is measured as it starts by default, with a 2 ms batching wait, and serving the run's int8 ONNX
export (`tunewise export --quantize int8` first, when the run has none). The script checks that every
contender's labels agree, prints a table (requests/s, p50 and p99 latency, errors) and writes
bench/results/serving.json. Targets (issue 14): >= 2x the pipeline's throughput at 16 clients, p50 at
one client no worse than 1.2x.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from predict import DEFAULT_TEXTS, ensure_run  # noqa: E402  (the SMS run as bench/predict.py trains it when missing)

from tunewise.runs.layout import ONNX_INT8_EXPORT  # noqa: E402

RESULTS = ROOT / "bench" / "results"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Body(BaseModel):
    """The baseline's request body (module level: FastAPI resolves the route's annotations by name)."""

    inputs: list[str]


def pipeline_server(run_dir: Path, port: int) -> None:
    """The baseline: pipeline(...) in a sync FastAPI route (child process)."""
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    classify = pipeline("text-classification", model=str(run_dir / "model"), trust_remote_code=True, device="cpu")
    app = FastAPI()

    @app.post("/predict")
    def predict(body: Body) -> dict[str, Any]:
        return {"predictions": classify(body.inputs, truncation=True, max_length=128)}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ready"}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def start(contender: str, run_dir: Path, port: int, options: list[str], log: Path) -> subprocess.Popen:
    """A server process, ready. Its log goes to a file: a pipe nobody reads fills up and stalls the server."""
    if contender == "pipeline":
        command = [sys.executable, __file__, "--pipeline-server", str(run_dir), "--port", str(port)]
    else:
        command = [sys.executable, "-m", "tunewise", "serve", str(run_dir), "--port", str(port), *options]
    with log.open("w") as stream:
        process = subprocess.Popen(command, stdout=stream, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{contender} server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{contender} server did not become ready")


async def load(url: str, texts: list[str], clients: int, requests: int) -> dict[str, Any]:
    """`clients` closed-loop clients sending `requests` one-text requests in all, after a warm-up."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        await send(http, url, texts, clients, min(4 * clients, 64))  # first-call allocations are not compared
        started = time.perf_counter()
        latencies, labels, errors = await send(http, url, texts, clients, requests)
        seconds = time.perf_counter() - started
    return {
        "clients": clients,
        "requests": requests,
        "seconds": round(seconds, 3),
        "requests_per_second": round(requests / seconds, 1),
        "p50_ms": round(float(np.percentile(latencies, 50)) * 1000, 1),
        "p99_ms": round(float(np.percentile(latencies, 99)) * 1000, 1),
        "errors": errors,
        "labels": labels,
    }


async def send(
    http: httpx.AsyncClient, url: str, texts: list[str], clients: int, requests: int
) -> tuple[list[float], dict[int, str], int]:
    """Latency of every request, the label of every text answered, and the errors."""
    latencies: list[float] = []
    labels: dict[int, str] = {}
    errors = 0
    numbers = iter(range(requests))  # shared by the clients: one event loop, so no two take the same number

    async def client() -> None:
        nonlocal errors
        for number in numbers:
            index = number % len(texts)
            started = time.perf_counter()
            try:
                response = await http.post(url, json={"inputs": [texts[index]]})
            except httpx.HTTPError:
                errors += 1
                continue
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors += 1
                continue
            labels[index] = top_label(response.json()["predictions"][0])

    await asyncio.gather(*(client() for _ in range(clients)))
    return latencies, labels, errors


def top_label(prediction: Any) -> str:
    """tunewise answers {"label": ...}; the pipeline [{"label": ...}] or {"label": ...}."""
    return str((prediction[0] if isinstance(prediction, list) else prediction)["label"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "sms-spam")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--requests", type=int, default=320, help="requests per load level")
    parser.add_argument("--pipeline-server", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.pipeline_server is not None:
        pipeline_server(args.pipeline_server, args.port)
        return

    texts = pd.read_csv(DEFAULT_TEXTS, sep="\t", dtype=str, keep_default_na=False, quoting=3)["text"].tolist()
    contenders = {
        "pipeline + FastAPI": ("pipeline", []),
        "tunewise serve": ("tunewise", []),
        "tunewise serve --max-wait-ms 2": ("tunewise", ["--max-wait-ms", "2"]),
        "tunewise serve --onnx (int8)": ("tunewise", ["--onnx"]),
    }
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as scratch:
        run_dir = ensure_run(args.run, Path(scratch))
        if not (run_dir / ONNX_INT8_EXPORT / "export.json").is_file():
            import tunewise

            tunewise.export(run_dir, quantize="int8")  # checked on the run's test rows, as `tunewise export` does
        for name, (kind, options) in contenders.items():
            port = free_port()
            process = start(kind, run_dir, port, options, Path(scratch) / f"server-{port}.log")
            try:
                for clients in args.clients:
                    result = asyncio.run(load(f"http://127.0.0.1:{port}/predict", texts, clients, args.requests))
                    rows.append({"contender": name, "options": options, **result})
                    Console().print(f"{name}, {clients} clients: {result['requests_per_second']} req/s")
            finally:
                process.terminate()
                process.wait(timeout=30)

    reference = {row["clients"]: row["labels"] for row in rows if row["contender"] == "pipeline + FastAPI"}
    for row in rows:
        labels = row.pop("labels")
        baseline = reference[row["clients"]]
        shared = [i for i in labels if i in baseline]
        row["labels_agree"] = round(sum(labels[i] == baseline[i] for i in shared) / max(len(shared), 1), 4)
    pipeline_rows = {row["clients"]: row for row in rows if row["contender"] == "pipeline + FastAPI"}
    for row in rows:
        base = pipeline_rows[row["clients"]]
        row["throughput_vs_pipeline"] = round(row["requests_per_second"] / base["requests_per_second"], 2)
        row["p50_vs_pipeline"] = round(row["p50_ms"] / base["p50_ms"], 2)

    table = Table(title=f"Serving the SMS run: one text per request, {os.cpu_count()} CPU cores, loopback")
    for column in (
        "contender",
        "clients",
        "req/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "x pipeline req/s",
        "x pipeline p50",
        "labels agree",
    ):
        table.add_column(column, justify="left" if column == "contender" else "right")
    for row in rows:
        table.add_row(
            row["contender"],
            str(row["clients"]),
            f"{row['requests_per_second']:.1f}",
            f"{row['p50_ms']:.1f}",
            f"{row['p99_ms']:.1f}",
            str(row["errors"]),
            f"{row['throughput_vs_pipeline']:.2f}x",
            f"{row['p50_vs_pipeline']:.2f}x",
            f"{row['labels_agree']:.1%}",
        )
    Console().print(table)
    import torch
    import transformers

    RESULTS.mkdir(parents=True, exist_ok=True)
    report = {
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        },
        "run": str(args.run),
        "requests_per_level": args.requests,
        "results": rows,
    }
    (RESULTS / "serving.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
