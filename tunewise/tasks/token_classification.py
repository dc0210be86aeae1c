"""Token classification (named-entity recognition): one tag per word, scored on entities.

Words are split further into sub-word tokens; the model is trained and judged on each word's
first sub-token only (the others, and the special tokens, get the label -100 that the loss
ignores), so every word gets exactly one prediction whatever the tokenizer. Words beyond
data.max_length have no token at all: they are predicted O, so an entity cut off by truncation
counts as missed (the data check says how many sentences are cut).

Metrics are seqeval's entity-level precision, recall and F1 (micro over entities; macro over
types; per type under `per_class`), read the conlleval way (default mode: a stray I- starts an
entity), plus word-level tag accuracy. Tags are converted to `ner.train_scheme` on reading, so
gold and predicted sequences are always in one scheme.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from seqeval.metrics import accuracy_score, classification_report
from transformers import AutoModelForTokenClassification, PreTrainedModel

from tunewise.audit.findings import Finding
from tunewise.config.schema import RunConfig
from tunewise.data import conll
from tunewise.data.readers import ROW_COLUMN, cite_rows
from tunewise.errors import DataError, TunewiseError
from tunewise.models.registry import CheckpointHints, ModelSource, load_text_tokenizer, resolve_model
from tunewise.training.batching import LABEL_PAD, EncodedSplit


class TokenClassificationTask:
    name = "token-classification"
    problem_type = "token_classification"
    keeps_logits = True  # entity metrics need every word's prediction
    truncates = True

    def __init__(self, config: RunConfig):
        self.ner = config.ner
        self.columns = conll.Columns(config.ner.tokens_column, config.ner.tags_column, config.data.text_column)
        self.scheme = config.ner.train_scheme  # the scheme the model's tags are written in
        self.truncation_warning_share = config.audit.truncation_warning_share
        self.label_names: list[str] = []

    @property
    def targets(self) -> str:
        return (
            f"a tag per word (CoNLL tag column {self.ner.conll_tag_column}, or JSONL column `{self.columns.tags}`), "
            f"learned in the {self.scheme} scheme"
        )

    # ----- model source -----------------------------------------------------------------------
    def resolve_source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def load_tokenizer(self, source: ModelSource) -> Any:
        return load_text_tokenizer(source, "token classification needs to map sub-word tokens back to words")

    # ----- data -----------------------------------------------------------------------------
    @property
    def text_columns(self) -> list[str]:
        """The sentence text (words joined by spaces): what the shared text, duplicate and leakage checks read."""
        return [self.columns.text]

    def read_split(self, source: str, split: str, with_labels: bool = True) -> pd.DataFrame:
        if conll.is_conll(source):
            frame = conll.read_conll(source, split, self.columns, self.ner.conll_tag_column, with_labels)
        else:
            frame = conll.read_records(source, split, self.columns, with_labels)
        if with_labels:
            where, unit = frame.attrs["source"], frame.attrs["row_unit"]
            conll.check_tag_names(frame[self.columns.tags].tolist(), frame[ROW_COLUMN].tolist(), unit, where)
            self._source_scheme(frame, frame.attrs["source"])  # a prefix the declared scheme lacks fails here
        return frame

    def fit_labels(self, train: pd.DataFrame) -> None:
        """O plus every prefix of the training scheme for each entity type in train (B-/I-, or B-/I-/E-/S-)."""
        kinds = sorted(entity_counts(self._tags(train)))
        if not kinds:
            raise DataError(
                f"train: every word is tagged O, so there is no entity to learn. Check ner.conll_tag_column (CoNLL) "
                f"or ner.tags_column ({self.columns.tags!r})."
            )
        prefixes = conll.SCHEME_PREFIXES[self.scheme]
        self.label_names = ["O"] + [f"{prefix}-{kind}" for kind in kinds for prefix in prefixes]

    def check_split(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Entity types the training data never shows cannot be predicted: refuse them, naming the sentences."""
        known = self.entity_types
        unseen: dict[str, list[int]] = {}
        for tags, row in zip(self._tags(frame), frame[ROW_COLUMN], strict=True):
            for kind in {kind for kind, _, _ in conll.spans(tags)} - known:
                unseen.setdefault(kind, []).append(int(row))
        if unseen:
            unit = frame.attrs.get("row_unit", "line")
            listed = "; ".join(
                f"{kind!r} in {len(rows)} sentence(s) ({cite_rows(rows, unit)})" for kind, rows in unseen.items()
            )
            raise DataError(
                f"{source}: entity type(s) never seen in training occur in the {split} data: {listed}. The model "
                f"cannot predict them. Add training sentences with these types, or retag or remove these sentences. "
                f"Training types: {', '.join(sorted(known))}."
            )

    @property
    def entity_types(self) -> set[str]:
        return {name[2:] for name in self.label_names if name != "O"}

    def audit_findings(self, frames: dict[str, pd.DataFrame], tokenizer: Any, max_length: int) -> list[Finding]:
        """Per split: the scheme read and converted, invalid tag sequences, entity counts and truncation."""
        findings = []
        for split, frame in frames.items():
            source = frame.attrs.get("source", split)
            scheme = self._source_scheme(frame, source)
            tags = frame[self.columns.tags].tolist()
            findings.append(self._scheme_note(split, scheme, tags))
            findings += self._invalid_sequences(split, frame, scheme, tags)
            findings += self._truncation(split, frame, tokenizer, max_length)
        return findings

    def _scheme_note(self, split: str, scheme: str, tags: list[list[str]]) -> Finding:
        counts = entity_counts([conll.convert(sentence, self.scheme) for sentence in tags])
        how = "as written" if scheme == self.scheme else f"converted to {self.scheme} for training"
        chosen = "detected" if self.ner.scheme == "auto" else "declared in ner.scheme"
        return Finding(
            "tags",
            "note",
            f"{split}: tags read as {scheme} ({chosen}), {how}; "
            f"{sum(counts.values())} entities: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".",
            split=split,
            count=sum(counts.values()),
            details={"scheme": scheme, "train_scheme": self.scheme, "entities": dict(sorted(counts.items()))},
        )

    def _invalid_sequences(self, split: str, frame: pd.DataFrame, scheme: str, tags: list[list[str]]) -> list[Finding]:
        invalid = [i for i, sentence in enumerate(tags) if not conll.is_valid(sentence, scheme)]
        if not invalid:
            return []
        rows = frame[ROW_COLUMN].to_numpy()[invalid].tolist()
        unit = frame.attrs.get("row_unit", "line")
        first = conll.first_problem(tags[invalid[0]], scheme)
        hint = (
            " If the whole file is IOB1 (CoNLL-2003's original release), set ner.scheme: IOB1."
            if scheme == "BIO"
            else ""
        )
        return [
            Finding(
                "tags",
                "warning",
                f"{split}: {len(invalid)} sentence(s) have tag sequences that are invalid in {scheme} (first: "
                f"{first}, sentence at {unit} {rows[0]}).",
                "Correct the tags. Until then tunewise reads them as conlleval does: a stray I- starts an entity, "
                f"and the sentence is rewritten in {self.scheme} that way.{hint}",
                split,
                len(invalid),
                rows,
                {"scheme": scheme, "first": first},
            )
        ]

    def _truncation(self, split: str, frame: pd.DataFrame, tokenizer: Any, max_length: int) -> list[Finding]:
        """Sentences whose words run past max_length sub-word tokens: those words are predicted O. A warning
        when an entity is lost or more than audit.truncation_warning_share of the sentences are cut."""
        starts = self._word_starts(frame[self.columns.words].tolist(), tokenizer, max_length)[1]
        kept_words = [
            int(np.flatnonzero(row >= 0).max(initial=-1)) + 1 for row in starts
        ]  # up to the last with a token
        cut_words = np.array([len(row) - kept for row, kept in zip(starts, kept_words, strict=True)])
        if not cut_words.any():
            return []
        cut = np.flatnonzero(cut_words)
        rows = frame[ROW_COLUMN].to_numpy()[cut].tolist()
        tags = frame[self.columns.tags].tolist()
        lost = sum(end >= kept_words[i] for i in cut for _, _, end in conll.spans(tags[i]))
        severe = lost > 0 or len(cut) > self.truncation_warning_share * len(frame)
        return [
            Finding(
                "length",
                "warning" if severe else "note",
                f"{split}: {len(cut)} of {len(frame)} sentence(s) are longer than max_length {max_length} sub-word "
                f"tokens; their last {int(cut_words.sum())} word(s) are predicted O and {lost} entity(ies) in them "
                "count as missed.",
                "Raise data.max_length, or split long sentences.",
                split,
                len(cut),
                rows,
                {"words_cut": int(cut_words.sum()), "entities_cut": lost},
            )
        ]

    def stratifies(self) -> bool:
        return False

    def metric_names(self) -> list[str]:
        return ["f1", "precision", "recall", "f1_macro", "token_accuracy", "loss"]

    def default_metric(self) -> str:
        return "f1"

    def _source_scheme(self, frame: pd.DataFrame, source: str) -> str:
        """The scheme a frame's tags are written in (ner.scheme, or detected); a foreign prefix is an error."""
        tags = frame[self.columns.tags].tolist()
        scheme = conll.detect_scheme(tags) if self.ner.scheme == "auto" else self.ner.scheme
        wrong = conll.wrong_prefixes(tags, scheme)
        if wrong:
            rows = frame[ROW_COLUMN].to_numpy()[wrong].tolist()
            raise DataError(
                f"{source}: E-/S- tags (BIOES) in {cite_rows(rows, frame.attrs.get('row_unit', 'line'))}, but "
                f"ner.scheme is {scheme}. Set ner.scheme: BIOES (or auto), or retag those sentences."
            )
        return scheme

    def _tags(self, frame: pd.DataFrame) -> list[list[str]]:
        """Each sentence's tags in the training scheme."""
        self._source_scheme(frame, frame.attrs.get("source", "data"))
        return [conll.convert(tags, self.scheme) for tags in frame[self.columns.tags]]

    # ----- model ----------------------------------------------------------------------------
    def build_model(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """A fresh linear head over every token (strategy.pooling does not apply: nothing is pooled).
        float32 master weights whatever the checkpoint stores, as for the other tasks."""
        model = AutoModelForTokenClassification.from_pretrained(
            source.location,
            num_labels=len(self.label_names),
            id2label=dict(enumerate(self.label_names)),
            label2id={name: i for i, name in enumerate(self.label_names)},
            dtype=torch.float32,
        )
        self.save_settings(model.config)
        return model

    def load_trained(self, model_dir: Path) -> PreTrainedModel:
        return AutoModelForTokenClassification.from_pretrained(model_dir)

    def save_settings(self, model_config: Any) -> None:
        model_config.num_labels = len(self.label_names)
        model_config.id2label = dict(enumerate(self.label_names))
        model_config.label2id = {name: i for i, name in enumerate(self.label_names)}
        model_config.tunewise_tag_scheme = self.scheme

    def restore(self, model_config: Any) -> None:
        self.label_names = [model_config.id2label[i] for i in range(len(model_config.id2label))]
        self.scheme = getattr(model_config, "tunewise_tag_scheme", self.scheme)

    # ----- encoding ---------------------------------------------------------------------------
    def encode(
        self, frame: pd.DataFrame, tokenizer: Any, max_length: int, use_cache: bool = False, training: bool = False
    ) -> EncodedSplit:
        """Sub-word ids per sentence; the label of each word on its first sub-token, -100 elsewhere.

        Not cached on disk (`use_cache` is ignored): the word-to-token map is needed too, and the fast
        tokenizer encodes CoNLL-2003's 14k training sentences in about a second."""
        words = frame[self.columns.words].tolist()
        ids, starts = self._word_starts(words, tokenizer, max_length)
        texts = frame[self.columns.text].astype(str).tolist()
        meta: dict[str, list] = {
            "word_starts": starts,
            "words": words,
            "texts": texts,
            "offsets": [conll.word_offsets(text, row) for text, row in zip(texts, words, strict=True)],
        }
        labels = None
        if self.columns.tags in frame.columns:
            index = {name: i for i, name in enumerate(self.label_names)}
            meta["tags"] = self._tags(frame)
            labels = []
            for row_ids, row_starts, tags in zip(ids, starts, meta["tags"], strict=True):
                row_labels = np.full(len(row_ids), LABEL_PAD, dtype=np.int64)
                kept = row_starts >= 0
                row_labels[row_starts[kept]] = [index[tag] for tag, keep in zip(tags, kept, strict=True) if keep]
                labels.append(row_labels)
        return EncodedSplit(sequences={"input_ids": ids}, labels=labels, meta=meta)

    @staticmethod
    def _word_starts(
        words: list[list[str]], tokenizer: Any, max_length: int
    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Token ids per sentence and, per word, the position of its first sub-token (-1: truncated away,
        or a word the tokenizer turns into nothing, such as a lone control character)."""
        encoded = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
        ids, starts = [], []
        for row, sentence in enumerate(words):
            first = np.full(len(sentence), -1, dtype=np.int64)
            for position, word in reversed(list(enumerate(encoded.word_ids(row)))):
                if word is not None:
                    first[word] = position
            ids.append(np.asarray(encoded["input_ids"][row], dtype=np.int32))
            starts.append(first)
        return ids, starts

    def frame_from_inputs(self, inputs: str | list[str] | list[list[str]]) -> pd.DataFrame:
        """Raw texts (split into words at whitespace and punctuation) or pre-split word lists."""
        items = [inputs] if isinstance(inputs, str) else list(inputs)
        words, texts = [], []
        for number, item in enumerate(items, start=1):
            if isinstance(item, str):
                item_words = conll.split_words(item)[0]
                text = item
            elif isinstance(item, (list, tuple)) and all(isinstance(w, str) and w.strip() for w in item):
                item_words, text = [w.strip() for w in item], " ".join(w.strip() for w in item)
            else:
                raise TunewiseError(
                    "predict() takes a text, a list of texts, or a list of word lists, e.g. "
                    'predict("John lives in Paris") or predict([["John", "lives", "in", "Paris"]]).'
                )
            if not item_words:
                raise TunewiseError(f"input {number} holds no word to tag ({item!r}).")
            words.append(item_words)
            texts.append(text)
        return pd.DataFrame({self.columns.text: texts, self.columns.words: words})

    # ----- outputs ----------------------------------------------------------------------------
    def word_predictions(self, logits: list[np.ndarray], split: EncodedSplit) -> tuple[list[list[str]], list]:
        """Per sentence: each word's tag (from its first sub-token; O when truncated) and its probability."""
        tags, scores = [], []
        for row_logits, starts in zip(logits, split.meta["word_starts"], strict=True):
            probabilities = torch.from_numpy(np.asarray(row_logits, dtype=np.float32)).softmax(-1).numpy()
            kept = starts >= 0
            best = np.zeros(len(starts), dtype=np.int64)
            confidence = np.ones(len(starts), dtype=np.float32)
            best[kept] = probabilities[starts[kept]].argmax(-1)
            confidence[kept] = probabilities[starts[kept]].max(-1)
            tags.append([self.label_names[i] if keep else "O" for i, keep in zip(best, kept, strict=True)])
            scores.append(confidence)
        return tags, scores

    def compute_metrics(self, logits: list[np.ndarray], split: EncodedSplit, loss: float | None = None) -> dict:
        predicted, _ = self.word_predictions(logits, split)
        gold = split.meta["tags"]
        report = classification_report(gold, predicted, output_dict=True, zero_division=0)
        micro, macro = report.get("micro avg", {}), report.get("macro avg", {})
        per_class = {
            kind: {
                "precision": float(scores["precision"]),
                "recall": float(scores["recall"]),
                "f1": float(scores["f1-score"]),
                "support": int(scores["support"]),
            }
            for kind, scores in sorted(report.items())
            if not kind.endswith(" avg")
        }
        return {
            "f1": float(micro.get("f1-score", 0.0)),
            "precision": float(micro.get("precision", 0.0)),
            "recall": float(micro.get("recall", 0.0)),
            "f1_macro": float(macro.get("f1-score", 0.0)),
            "token_accuracy": float(accuracy_score(gold, predicted)),
            "entities": int(micro.get("support", 0)),
            "words": int(sum(len(tags) for tags in gold)),
            "truncated_words": int(sum((starts < 0).sum() for starts in split.meta["word_starts"])),
            "per_class": per_class,
        }

    def calibrate(self, logits: Any, split: EncodedSplit) -> None:
        """Nothing to fit after training."""

    def present(self, logits: list[np.ndarray], split: EncodedSplit) -> pd.DataFrame:
        """Per sentence: the predicted tags (one per word) and the entities, with character offsets into
        the sentence's text and the mean probability of their words' tags as the score."""
        tags, scores = self.word_predictions(logits, split)
        entities = []
        for row_tags, row_scores, text, offsets in zip(
            tags, scores, split.meta["texts"], split.meta["offsets"], strict=True
        ):
            found = []
            for kind, first, last in conll.spans(row_tags):
                start, end = offsets[first][0], offsets[last][1]
                score = float(np.mean(row_scores[first : last + 1]))
                found.append({"entity": kind, "text": text[start:end], "start": start, "end": end, "score": score})
            entities.append(found)
        return pd.DataFrame({"predicted_tags": tags, "entities": entities})


def entity_counts(tag_lists: list[list[str]]) -> Counter:
    """Entities per type over all sentences."""
    return Counter(kind for tags in tag_lists for kind, _, _ in conll.spans(tags))
