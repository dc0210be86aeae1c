"""Shared fixtures and helpers: tiny random models (BERT with and without sentence-transformers mean
pooling, GPT-2 and Llama shapes), small learnable datasets for every problem type, config builders,
the crash-and-resume helper, and a live server on loopback (`serving`).

Test modules import helpers from here only (never from each other). Nothing here needs the network,
the real MiniLM weights or `../shared`: the tiny models' tokenizer is built from a small word
vocabulary with the `tokenizers` library, so unit tests run on a fresh machine.
"""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

# Two cores are often shared with other jobs; spinning OpenMP workers then slow small ops a hundredfold.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# no test may reach a model or dataset hub: offline, a hub name fails at once instead of retrying for ~40 s
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
# One torch thread: the tiny models are far too small to gain from more, and it keeps timings steady.
UNIT_TEST_THREADS = 1

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
SST2 = SHARED / "data" / "sst2"


def shared_path(relative: str) -> Path:
    """A file or folder under ../shared; skips the calling test with a clear reason when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"needs ../shared/{relative} (the shared data folder beside the project); not found at {path}")
    return path


def requires_shared(relative: str) -> pytest.MarkDecorator:
    """Decorator form of `shared_path`: `@requires_shared("data/sst2")`."""
    return pytest.mark.skipif(
        not (SHARED / relative).exists(),
        reason=f"needs ../shared/{relative} (the shared data folder beside the project); not found at {SHARED}",
    )


# ------------------------------------------------------------------------------------------ vocabulary

POSITIVE = ["good", "great", "excellent", "wonderful", "lovely", "superb"]
NEGATIVE = ["bad", "awful", "terrible", "horrible", "dreadful", "poor"]
SUBJECTS = ["the film", "the movie", "this book", "the show", "the meal", "our trip", "the song", "the hotel"]
FILLERS = ["really", "truly", "quite", "very", "so", "rather"]
ENDINGS = ["overall", "today", "again", "for us", "in the end", "honestly"]
TOPICS = {
    "sports": ["match", "goal", "team", "coach"],
    "politics": ["vote", "senate", "minister", "election"],
    "tech": ["laptop", "software", "chip", "robot"],
}
EXTRA_WORDS = [
    "the",
    "a",
    "this",
    "our",
    "film",
    "movie",
    "book",
    "show",
    "meal",
    "trip",
    "song",
    "hotel",
    "was",
    "is",
    "it",
    "and",
    "about",
    "news",
    "on",
    "of",
    "for",
    "us",
    "in",
    "end",
    "with",
    "i",
    "you",
    "see",
    "at",
    "lunch",
    "loved",
    "hated",
    "claim",
    "prize",
    "now",
    "winner",
    "text",
    "free",
    "call",
    "me",
    "same",
    "different",
    "sentence",
    "meaning",
    "says",
    "what",
    "thing",
    "another",
    "one",
    "very",
    "not",
    "yes",
    "no",
]
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
MAX_POSITIONS = 128


def tiny_vocabulary() -> list[str]:
    words: list[str] = []
    for group in (POSITIVE, NEGATIVE, FILLERS, EXTRA_WORDS, *TOPICS.values()):
        for phrase in group:
            words.extend(phrase.split())
    for ending in ENDINGS + SUBJECTS:
        words.extend(ending.split())
    letters = [chr(c) for c in range(ord("a"), ord("z") + 1)] + list("0123456789")
    punctuation = list(".,!?'\"-:;()")
    pieces = [f"##{c}" for c in letters]
    vocab = SPECIAL_TOKENS + sorted(set(words) | set(letters) | set(punctuation)) + pieces
    return list(dict.fromkeys(vocab))


def build_tokenizer(folder: Path) -> Any:
    """A lower-casing WordPiece tokenizer (BERT conventions) saved into `folder`."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(tiny_vocabulary())}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    backend.normalizer = normalizers.BertNormalizer(lowercase=True)
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    backend.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=MAX_POSITIONS,
    )
    tokenizer.save_pretrained(folder)
    return tokenizer


def build_tiny_bert(folder: Path, pooling: str | None = None) -> Path:
    """A random 2-layer BERT (hidden 32) saved with its tokenizer; `pooling` adds 1_Pooling/config.json."""
    import torch
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(folder)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(1234)
    BertModel(config).save_pretrained(folder)
    if pooling is not None:
        (folder / "1_Pooling").mkdir(exist_ok=True)
        (folder / "1_Pooling" / "config.json").write_text(
            json.dumps(
                {
                    "word_embedding_dimension": 32,
                    "pooling_mode_cls_token": pooling == "cls",
                    "pooling_mode_mean_tokens": pooling == "mean",
                    "pooling_mode_max_tokens": pooling == "max",
                    "pooling_mode_mean_sqrt_len_tokens": False,
                }
            ),
            encoding="utf-8",
        )
    return folder


def build_tiny_causal_lm(folder: Path, architecture: str = "gpt2") -> Path:
    """A random 2-layer causal LM (GPT-2 or Llama shape, hidden 32) with the tiny tokenizer; [SEP] is its EOS."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    folder.mkdir(parents=True, exist_ok=True)
    from tokenizers import processors

    tokenizer = build_tokenizer(folder)
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B:1")
    tokenizer.eos_token = "[SEP]"  # like GPT-2's tokenizer: no special tokens added, EOS appended by tunewise
    tokenizer.save_pretrained(folder)
    torch.manual_seed(1234)
    if architecture == "gpt2":
        config = GPT2Config(
            vocab_size=len(tokenizer),
            n_embd=32,
            n_layer=2,
            n_head=2,
            n_positions=MAX_POSITIONS,
            bos_token_id=tokenizer.eos_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        model = GPT2LMHeadModel(config)
    else:
        config = LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=MAX_POSITIONS,
        )
        model = LlamaForCausalLM(config)
    model.config.eos_token_id = tokenizer.eos_token_id
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-gpt2") / "model", "gpt2")


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_causal_lm(tmp_path_factory.mktemp("tiny-llama") / "model", "llama")


@pytest.fixture(scope="session", autouse=True)
def token_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Tests never write to the user's ~/.cache: the token cache lives in a session folder."""
    folder = tmp_path_factory.mktemp("token-cache")
    previous = os.environ.get("TUNEWISE_CACHE_DIR")
    os.environ["TUNEWISE_CACHE_DIR"] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop("TUNEWISE_CACHE_DIR", None)
    else:
        os.environ["TUNEWISE_CACHE_DIR"] = previous


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Plain transformers folder (no 1_Pooling): tunewise uses the stock [CLS] head."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert") / "model")


@pytest.fixture(scope="session")
def tiny_mean_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same tiny BERT declaring sentence-transformers mean pooling: tunewise uses its pooled head."""
    return build_tiny_bert(tmp_path_factory.mktemp("tiny-bert-mean") / "model", pooling="mean")


# ------------------------------------------------------------------------------------------ datasets


def sentiment_rows(n: int, seed: int, integer_labels: bool = False) -> list[dict[str, Any]]:
    """Balanced rows whose label is decided by one sentiment word."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        positive = i % 2 == 0
        word = rng.choice(POSITIVE if positive else NEGATIVE)
        text = f"{rng.choice(SUBJECTS)} was {rng.choice(FILLERS)} {word} {rng.choice(ENDINGS)}"
        label: Any = (1 if positive else 0) if integer_labels else ("positive" if positive else "negative")
        rows.append({"text": text, "label": label})
    rng.shuffle(rows)
    return rows


def multi_label_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Each row mentions one or two topics; the labels are the topics it mentions."""
    rng = random.Random(seed)
    names = sorted(TOPICS)
    rows = []
    for i in range(n):
        chosen = [names[i % 3]] if i % 2 == 0 else sorted(rng.sample(names, 2))
        words = [rng.choice(TOPICS[name]) for name in chosen]
        rows.append({"text": f"news about the {' and the '.join(words)} {rng.choice(ENDINGS)}", "label": chosen})
    return rows


def regression_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """A score near 0.9 for positive words and near 0.1 for negative ones (never a whole number)."""
    rng = random.Random(seed)
    rows = []
    for row in sentiment_rows(n, seed):
        score = (0.85 if row["label"] == "positive" else 0.15) + rng.uniform(-0.05, 0.05)
        rows.append({"text": row["text"], "label": round(score, 3)})
    return rows


def pair_rows(n: int, seed: int) -> list[dict[str, Any]]:
    """Sentence pairs: "same" when both halves carry the same sentiment, else "different"."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        first_positive = rng.random() < 0.5
        same = i % 2 == 0
        second_positive = first_positive if same else not first_positive
        first = rng.choice(POSITIVE if first_positive else NEGATIVE)
        second = rng.choice(POSITIVE if second_positive else NEGATIVE)
        rows.append(
            {
                "premise": f"{rng.choice(SUBJECTS)} was {first}",
                "hypothesis": f"{rng.choice(SUBJECTS)} is {rng.choice(FILLERS)} {second}",
                "label": "same" if same else "different",
            }
        )
    return rows


def write_csv(path: Path, rows: list[dict[str, Any]]) -> str:
    pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


@pytest.fixture(scope="session")
def single_label_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """String labels (positive/negative): train (96 rows) and test (40 rows) CSVs."""
    folder = tmp_path_factory.mktemp("single-label")
    return {
        "train": write_csv(folder / "train.csv", sentiment_rows(96, seed=1)),
        "test": write_csv(folder / "test.csv", sentiment_rows(40, seed=2)),
    }


@pytest.fixture(scope="session")
def integer_label_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Integer labels 0/1: train and test CSVs."""
    folder = tmp_path_factory.mktemp("integer-label")
    return {
        "train": write_csv(folder / "train.csv", sentiment_rows(80, seed=3, integer_labels=True)),
        "test": write_csv(folder / "test.csv", sentiment_rows(30, seed=4, integer_labels=True)),
    }


@pytest.fixture(scope="session")
def multi_label_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """JSONL with a list of topic labels per row."""
    folder = tmp_path_factory.mktemp("multi-label")
    return {
        "train": write_jsonl(folder / "train.jsonl", multi_label_rows(90, seed=5)),
        "test": write_jsonl(folder / "test.jsonl", multi_label_rows(30, seed=6)),
    }


@pytest.fixture(scope="session")
def regression_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Float labels in [0.1, 0.9]."""
    folder = tmp_path_factory.mktemp("regression")
    return {
        "train": write_csv(folder / "train.csv", regression_rows(80, seed=7)),
        "test": write_csv(folder / "test.csv", regression_rows(30, seed=8)),
    }


@pytest.fixture(scope="session")
def pair_data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Sentence pairs in columns premise/hypothesis with labels same/different."""
    folder = tmp_path_factory.mktemp("pairs")
    return {
        "train": write_csv(folder / "train.csv", pair_rows(80, seed=9)),
        "test": write_csv(folder / "test.csv", pair_rows(30, seed=10)),
    }


# ------------------------------------------------------------------------------------------ configs


def deep_update(base: dict, overrides: dict) -> dict:
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_update(base[key], value)
        else:
            base[key] = value
    return base


def make_config(tmp_path: Path, model_dir: Path | str, data: dict[str, str] | None = None, **overrides: Any) -> dict:
    """A small, fast run config as a dict. Keyword overrides merge into the sections (nested dicts merge).

    make_config(tmp_path, tiny_model_dir, single_label_data, train={"epochs": 1}, output_dir=...)
    """
    config: dict[str, Any] = {
        "task": "text-classification",
        "model": str(model_dir),
        "data": {"max_length": 32, **(data or {})},
        "strategy": {"method": "full"},
        "train": {
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 3e-3,
            "warmup_ratio": 0.0,
            "seed": 0,
            "num_threads": UNIT_TEST_THREADS,
            "precision": "fp32",
        },
        # the tiny synthetic rows repeat each other by design; tests of the check before training turn it on
        "audit": {"before_training": False},
        # explanations stay on (explain.enabled auto) but on a few rows: every run here pays for them
        "explain": {"rows": 8, "examples": 2},
        "output_dir": str(tmp_path / "run"),
    }
    return deep_update(config, overrides)


def lm_config(tmp_path: Path, model_dir: Path, files: dict, **overrides: Any) -> dict:
    """A small causal-lm run config (batch 4, 5 epochs at 3e-3 unless overridden)."""
    return make_config(
        tmp_path,
        model_dir,
        {**files, **overrides.pop("data", {})},
        task="causal-lm",
        train={"epochs": 5, "batch_size": 4, "learning_rate": 3e-3, **overrides.pop("train", {})},
        **overrides,
    )


STORY_WORDS = ["good", "bad", "great", "awful", "film", "movie", "book", "show", "really", "very"]


def story_rows(n: int, seed: int) -> list[dict[str, str]]:
    """Short texts with a learnable pattern: '<subject> was <word> and <word>'."""
    rng = random.Random(seed)
    return [
        {"text": f"{rng.choice(SUBJECTS)} was {rng.choice(STORY_WORDS)} and {rng.choice(STORY_WORDS)}"}
        for _ in range(n)
    ]


# ------------------------------------------------------------------------------------------ crash and resume


class Interrupted(Exception):
    """Stands in for a crash or a kill right after a checkpoint was written."""


def train_until_crash(
    monkeypatch: pytest.MonkeyPatch, config: dict, after_checkpoints: int = 1, **options: Any
) -> list[int]:
    """Train `config` until its `after_checkpoints`-th checkpoint is on disk, then crash as a kill would.

    Returns the steps of the checkpoints written; `tunewise.train(config, resume=True)` continues from
    the last. The checkpoint writer is wrapped where the training loop calls it, so what is on disk
    is exactly what a real interruption leaves."""
    import tunewise
    from tunewise.training import loop as training_loop

    real_save = training_loop.save_checkpoint
    saved: list[int] = []

    def save_then_crash(folder: Path, step: int, payload: dict, keep_last: int) -> Path:
        path = real_save(folder, step, payload, keep_last)
        saved.append(step)
        if len(saved) == after_checkpoints:
            raise Interrupted
        return path

    monkeypatch.setattr(training_loop, "save_checkpoint", save_then_crash)
    with pytest.raises(Interrupted):
        tunewise.train(config, show_progress=False, **options)
    monkeypatch.setattr(training_loop, "save_checkpoint", real_save)
    return saved


# ------------------------------------------------------------------------------------------ run folders and the CLI


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def saved_weights(folder: Path) -> dict[str, Any]:
    """The tensors of `folder/model.safetensors` (a saved model or a pretrained folder), by name."""
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def assert_same_weights(left: dict[str, Any], right: dict[str, Any]) -> None:
    """Two state dicts hold the same names and bit-identical tensors."""
    import torch

    assert left.keys() == right.keys()
    different = [name for name in left if not torch.equal(left[name], right[name])]
    assert not different, f"weights differ: {different[:5]}"


def without_timings(history: list[dict]) -> list[dict]:
    """History records without their wall-clock seconds, which differ between identical runs."""
    return [{key: value for key, value in record.items() if key != "seconds"} for record in history]


class CliResult:
    """A CLI result whose `output` has rich's line wrapping undone, so messages can be matched."""

    def __init__(self, result: Any):
        self.exit_code = result.exit_code
        self.stdout = result.stdout
        self.output = " ".join(result.output.split())


def invoke_cli(*args: Any) -> CliResult:
    """Run `tunewise <args>` in-process (typer's CliRunner); arguments are turned into strings."""
    from typer.testing import CliRunner

    from tunewise.cli import app

    return CliResult(CliRunner().invoke(app, [str(arg) for arg in args]))


# ------------------------------------------------------------------------------------------ a live server


class LiveServer:
    """`tunewise serve`'s app (serving.http.create_app) under uvicorn in a thread, on a free loopback port; `url`
    once it accepts connections (and, with `ready`, once the model is loaded). `loader` defaults to
    serving.predictor.load."""

    def __init__(self, folder: Path, settings: Any = None, loader: Any = None, ready: bool = True):
        import socket
        import threading
        import time

        import httpx
        import uvicorn

        from tunewise.serving.http import ServerSettings, create_app
        from tunewise.serving.predictor import load

        self.app = create_app(folder, settings or ServerSettings(), loader or load)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning", lifespan="on"))
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 60
        while not self.server.started:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        while ready and httpx.get(f"{self.url}/health").status_code != 200:
            assert time.monotonic() < deadline, "the model did not load"
            time.sleep(0.02)

    def post(self, inputs: Any, body: dict[str, Any] | None = None, **kwargs: Any) -> Any:
        """POST /predict {"inputs": inputs, **body} (body: explain, explain_label, ...)."""
        import httpx

        return httpx.post(f"{self.url}/predict", json={"inputs": inputs, **(body or {})}, timeout=60, **kwargs)

    def get(self, route: str, **kwargs: Any) -> Any:
        import httpx

        return httpx.get(f"{self.url}{route}", timeout=60, **kwargs)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture
def serving() -> Iterator[Any]:
    """Start servers (`serving(folder, settings, loader)`); every one started is stopped after the test."""
    started: list[LiveServer] = []

    def start(*args: Any, **kwargs: Any) -> LiveServer:
        started.append(LiveServer(*args, **kwargs))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# ------------------------------------------------------------------------------------------ planted data problems

SMS_SPAM_TRAIN = Path(__file__).resolve().parents[1] / "tunewise" / "data" / "builtin" / "sms_spam" / "train.tsv"


def sms_rows() -> pd.DataFrame:
    """300 ham and 100 spam messages of the bundled SMS spam data (columns text, label)."""
    import csv

    frame = pd.read_csv(SMS_SPAM_TRAIN, sep="\t", quoting=csv.QUOTE_NONE, dtype=str, keep_default_na=False)
    ham = frame[frame.label == "ham"].head(300)
    spam = frame[frame.label == "spam"].head(100)
    return pd.concat([ham, spam]).reset_index(drop=True)


@pytest.fixture
def planted(tmp_path: Path) -> dict:
    """SMS rows with one of each problem planted, as train/validation/test TSVs; row numbers are as a
    spreadsheet shows them. {"paths": split -> file, "train": frame, "test": frame}."""
    import csv

    rows = sms_rows()
    train, validation, test = rows.iloc[:260].copy(), rows.iloc[260:330].copy(), rows.iloc[330:].copy()
    extra = pd.DataFrame(
        [
            {"text": "  " + train.text.iloc[4].upper() + "  ", "label": train.label.iloc[4]},  # exact duplicate
            {"text": train.text.iloc[9], "label": "spam" if train.label.iloc[9] == "ham" else "ham"},  # conflict
            {"text": "mail me at jane.doe@example.com or call +44 20 7946 0958", "label": "ham"},  # personal data
            {"text": "the cafÃ© is open", "label": "ham"},  # mojibake
            {"text": "zq", "label": "ham"},  # near-empty
        ]
    )
    train = pd.concat([train, extra]).reset_index(drop=True)
    test = pd.concat([test, train.iloc[[20]]]).reset_index(drop=True)  # a leaked training row
    paths = {}
    for split, frame in {"train": train, "validation": validation, "test": test}.items():
        paths[split] = str(tmp_path / f"{split}.tsv")
        frame.to_csv(paths[split], sep="\t", index=False, quoting=csv.QUOTE_NONE)
    return {"paths": paths, "train": train, "test": test}


def assert_close(got: Any, want: Any) -> None:
    """The same JSON, numbers to float32 precision (the server sends them as float64)."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want)
        for key, value in want.items():
            assert_close(got[key], value)
    elif isinstance(want, list | tuple):
        assert isinstance(got, list) and len(got) == len(want)
        for item, value in zip(got, want, strict=True):
            assert_close(item, value)
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5)
    else:
        assert got == want


# imported here, after the environment above is set (OpenMP reads it when torch loads)
import torch  # noqa: E402
from torch import nn  # noqa: E402
from transformers.modeling_outputs import SequenceClassifierOutput  # noqa: E402


class KeyWordModel(nn.Module):
    """A classifier whose answer is known: class 1's logit is 6 x (how often the key token occurs) - 3, plus
    at most 0.2 from every other token (tanh of a sum over a second embedding column), so the key token
    decides and the rest barely matter. It takes ids or embeddings, as a transformers model does."""

    def __init__(self, vocab_size: int, key: int, pad: int):
        super().__init__()
        self.embeddings = nn.Embedding(vocab_size, 4, padding_idx=pad)
        with torch.no_grad():
            self.embeddings.weight.normal_(generator=torch.Generator().manual_seed(0))
            self.embeddings.weight[:, 0] = 0.0
            self.embeddings.weight[key, 0] = 1.0
            self.embeddings.weight[pad] = 0.0

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embeddings

    def forward(self, input_ids=None, attention_mask=None, inputs_embeds=None, **_: Any) -> SequenceClassifierOutput:
        x = self.embeddings(input_ids) if inputs_embeds is None else inputs_embeds
        mask = attention_mask.to(x.dtype)
        key_count = (x[..., 0] * mask).sum(-1)
        rest = torch.tanh((x[..., 1] * mask).sum(-1))
        second = 6.0 * key_count - 3.0 + 0.2 * rest
        return SequenceClassifierOutput(logits=torch.stack([torch.zeros_like(second), second], dim=-1))
