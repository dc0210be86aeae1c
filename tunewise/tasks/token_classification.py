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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Final, Literal

import numpy as np
import pandas as pd
import torch
from pydantic import Field
from seqeval.metrics import accuracy_score, classification_report
from torch import nn
from transformers import AutoConfig, AutoModelForTokenClassification, PreTrainedModel

from tunewise.config.rules import Rule, rule
from tunewise.config.sections import RunConfig, Section
from tunewise.data import conll
from tunewise.data.readers import ROW_COLUMN, cite_rows
from tunewise.errors import ConfigError, DataError, TunewiseError
from tunewise.inference import predict_logits
from tunewise.models.registry import load_text_tokenizer, resolve_model, save_pretrained
from tunewise.tasks.base import TextExplanation
from tunewise.tasks.token_places import row_features, row_score, word_places
from tunewise.types import (
    LABEL_PAD,
    Capabilities,
    CheckpointHints,
    EncodedSplit,
    Finding,
    ModelSource,
    Outputs,
    Purpose,
    TaskFacts,
    TextExplanationTarget,
)

NAME: Final = "token-classification"


# ------------------------------------------------------------------------------------------ config


class NerConfig(Section):
    tokens_column: str = Field(
        default="tokens",
        description="JSONL/Parquet/hf: data: the column holding each sentence's words (a "
        "list of strings). CoNLL column files need no column names.",
    )
    tags_column: str = Field(
        default="tags",
        description="JSONL/Parquet/hf: data: the column holding one tag per word (O, B-PER, I-PER, ...).",
    )
    conll_tag_column: int = Field(
        default=-1,
        description="CoNLL files (.conll, .txt, .iob, .bio): which whitespace-separated "
        "column holds the tag, counted from 0 (the word); -1 is the last (CoNLL-2003's NER tags).",
    )
    scheme: Literal["auto", "IOB1", "BIO", "BIOES"] = Field(
        default="auto",
        description="The tag scheme the data files are written in. auto: BIOES when S-/E- "
        "tags occur, else IOB1 when that reads the data with fewer invalid sequences than BIO (I- after O), else "
        "BIO. Tags are converted to train_scheme.",
    )
    train_scheme: Literal["BIO", "BIOES"] = Field(
        default="BIO",
        description="The tag scheme the model learns and predicts; every file is converted "
        "to it (entity-level metrics do not depend on it).",
    )


@rule(NAME, "ner.tags_column")
def words_tags_and_text_are_three_columns(config: TokenClassificationConfig) -> str | None:
    ner = config.ner
    if len({ner.tokens_column, ner.tags_column, config.data.text_column}) < 3:
        return (
            f"ner.tokens_column ({ner.tokens_column!r}), ner.tags_column ({ner.tags_column!r}) and "
            f"data.text_column ({config.data.text_column!r}) must name three different columns"
        )
    return None


@rule(NAME, "ner.conll_tag_column")
def tag_column_is_not_the_word(config: TokenClassificationConfig) -> str | None:
    if config.ner.conll_tag_column == 0:
        return (
            "column 0 is the word itself; give the tag's column (1 for 'word tag' files, 3 or -1 for CoNLL-2003's "
            "'word POS chunk NER')"
        )
    return None


class TokenClassificationConfig(RunConfig):
    """Tag every word (named-entity recognition), from CoNLL column files or JSONL."""

    rules: ClassVar[tuple[Rule, ...]] = (
        *RunConfig.rules,
        words_tags_and_text_are_three_columns,
        tag_column_is_not_the_word,
    )

    task: Literal["token-classification"] = Field(
        default=NAME, description="token-classification: a tag per word (named entities), from CoNLL or JSONL."
    )
    ner: NerConfig = Field(default_factory=NerConfig, description="Data columns and tag schemes.")


# ------------------------------------------------------------------------------------------ the task


@dataclass
class TagSet:
    """The tags the model predicts, and the scheme they are written in (learnt from train, saved with the model)."""

    scheme: str
    names: list[str] = field(default_factory=list)

    @property
    def entity_types(self) -> set[str]:
        return {name[2:] for name in self.names if name != "O"}


class TokenClassificationTask:
    def __init__(self, config: TokenClassificationConfig):
        self.tags = TagSet(scheme=config.ner.train_scheme)
        self.data = NerReader(config, self.tags)
        self.model = NerModel(self.tags)
        self.scoring = NerScoring(self.tags)
        self.explanation: TextExplanation = NerExplanation(self.data, self.scoring, self.tags)

    def facts(self) -> TaskFacts:
        ner = self.data.ner
        return TaskFacts(
            name=NAME,
            problem_type="token_classification",
            text_columns=(self.data.columns.text,),
            label_names=tuple(self.tags.names),
            targets=(
                f"a tag per word (CoNLL tag column {ner.conll_tag_column}, or JSONL column "
                f"`{self.data.columns.tags}`), learned in the {self.tags.scheme} scheme"
            ),
            metrics=("f1", "precision", "recall", "f1_macro", "token_accuracy", "loss"),
            default_metric="f1",
            capabilities=Capabilities(explanations=True),
        )


class NerReader:
    def __init__(self, config: TokenClassificationConfig, tags: TagSet):
        self.ner = config.ner
        self.columns = conll.Columns(config.ner.tokens_column, config.ner.tags_column, config.data.text_column)
        self.tags = tags
        self.truncation_warning_share = config.audit.truncation_warning_share
        self.detected: dict[str, str] = {}  # source -> the tag scheme it is written in (ner.scheme auto)

    @property
    def text_columns(self) -> list[str]:
        """The sentence text (words joined by spaces): what the shared text, duplicate and leakage checks read."""
        return [self.columns.text]

    def read(self, source: str, split: str, labelled: bool = True) -> pd.DataFrame:
        if conll.is_conll(source):
            frame = conll.read_conll(source, split, self.columns, self.ner.conll_tag_column, labelled)
        else:
            frame = conll.read_records(source, split, self.columns, labelled)
        if labelled:
            where, unit = frame.attrs["source"], frame.attrs["row_unit"]
            conll.check_tag_names(frame[self.columns.tags].tolist(), frame[ROW_COLUMN].tolist(), unit, where)
            self._source_scheme(frame, frame.attrs["source"])  # a prefix the declared scheme lacks fails here
        return frame

    def learn(self, train: pd.DataFrame) -> None:
        """O plus every prefix of the training scheme for each entity type in train (B-/I-, or B-/I-/E-/S-)."""
        kinds = sorted(entity_counts(self._tags(train)))
        if not kinds:
            raise DataError(
                f"train: every word is tagged O, so there is no entity to learn. Check ner.conll_tag_column (CoNLL) "
                f"or ner.tags_column ({self.columns.tags!r})."
            )
        prefixes = conll.SCHEME_PREFIXES[self.tags.scheme]
        self.tags.names = ["O"] + [f"{prefix}-{kind}" for kind in kinds for prefix in prefixes]

    def check(self, frame: pd.DataFrame, split: str, source: str) -> None:
        """Entity types the training data never shows cannot be predicted: refuse them, naming the sentences."""
        known = self.tags.entity_types
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

    def findings(self, frames: dict[str, pd.DataFrame], processor: Any, max_length: int) -> list[Finding]:
        """Per split: the scheme read and converted, invalid tag sequences, entity counts and truncation."""
        findings = []
        for split, frame in frames.items():
            source = frame.attrs.get("source", split)
            scheme = self._source_scheme(frame, source)
            tags = frame[self.columns.tags].tolist()
            findings.append(self._scheme_note(split, scheme, tags))
            findings += self._invalid_sequences(split, frame, scheme, tags)
            findings += self._truncation(split, frame, processor, max_length)
        return findings

    def _scheme_note(self, split: str, scheme: str, tags: list[list[str]]) -> Finding:
        counts = entity_counts([conll.convert(sentence, self.tags.scheme) for sentence in tags])
        how = "as written" if scheme == self.tags.scheme else f"converted to {self.tags.scheme} for training"
        chosen = "detected" if self.ner.scheme == "auto" else "declared in ner.scheme"
        return Finding(
            "tags",
            "note",
            f"{split}: tags read as {scheme} ({chosen}), {how}; "
            f"{sum(counts.values())} entities: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) + ".",
            split=split,
            count=sum(counts.values()),
            details={"scheme": scheme, "train_scheme": self.tags.scheme, "entities": dict(sorted(counts.items()))},
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
                f"and the sentence is rewritten in {self.tags.scheme} that way.{hint}",
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

    def _source_scheme(self, frame: pd.DataFrame, source: str) -> str:
        """The scheme a frame's tags are written in (ner.scheme, or detected); a foreign prefix is an error."""
        tags = frame[self.columns.tags].tolist()
        scheme = conll.detect_scheme(tags) if self.ner.scheme == "auto" else self.ner.scheme
        self.detected[source] = scheme
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
        return [conll.convert(tags, self.tags.scheme) for tags in frame[self.columns.tags]]

    # ----- encoding ---------------------------------------------------------------------------
    def encode(
        self, frame: pd.DataFrame, processor: Any, max_length: int, purpose: Purpose, use_cache: bool = False
    ) -> EncodedSplit:
        """Sub-word ids per sentence; the label of each word on its first sub-token, -100 elsewhere.

        Not cached on disk (`use_cache` is ignored): the word-to-token map is needed too, and the fast
        tokenizer encodes CoNLL-2003's 14k training sentences in about a second."""
        words = frame[self.columns.words].tolist()
        ids, starts = self._word_starts(words, processor, max_length)
        texts = frame[self.columns.text].astype(str).tolist()
        meta: dict[str, list] = {
            "word_starts": starts,
            "words": words,
            "texts": texts,
            "offsets": [conll.word_offsets(text, row) for text, row in zip(texts, words, strict=True)],
        }
        labels = None
        if purpose != "predict" and self.columns.tags in frame.columns:
            index = {name: i for i, name in enumerate(self.tags.names)}
            meta["tags"] = self._tags(frame)
            labels = []
            for row_ids, row_starts, tags in zip(ids, starts, meta["tags"], strict=True):
                row_labels = np.full(len(row_ids), LABEL_PAD, dtype=np.int64)
                kept = row_starts >= 0
                row_labels[row_starts[kept]] = [index[tag] for tag, keep in zip(tags, kept, strict=True) if keep]
                labels.append(row_labels)
        return EncodedSplit(
            sequences={"input_ids": ids}, labels=labels, meta=meta, pad_token_id=processor.pad_token_id or 0
        )

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

    def resolve(self, config: TokenClassificationConfig) -> TokenClassificationConfig:
        """ner.scheme auto becomes the scheme detected, when every file is written in the same one (files in
        different schemes keep auto: each is read in its own)."""
        schemes = set(self.detected.values())
        if config.ner.scheme != "auto" or len(schemes) != 1:
            return config
        return config.model_copy(update={"ner": config.ner.model_copy(update={"scheme": schemes.pop()})})

    def from_inputs(self, inputs: str | list[str] | list[list[str]]) -> pd.DataFrame:
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


class NerModel:
    def __init__(self, tags: TagSet):
        self.tags = tags

    def source(self, name: str) -> ModelSource:
        return resolve_model(name)

    def processor(self, source: ModelSource) -> Any:
        return load_text_tokenizer(source, "token classification needs to map sub-word tokens back to words")

    def build(self, source: ModelSource, hints: CheckpointHints, pooling: str) -> PreTrainedModel:
        """A fresh linear head over every token (strategy.pooling does not apply: nothing is pooled).
        float32 master weights whatever the checkpoint stores, as for the other tasks."""
        model = AutoModelForTokenClassification.from_pretrained(
            source.location,
            num_labels=len(self.tags.names),
            id2label=dict(enumerate(self.tags.names)),
            label2id={name: i for i, name in enumerate(self.tags.names)},
            dtype=torch.float32,
        )
        self._save_settings(model.config)
        return model

    def save(self, model: Any, processor: Any, folder: Path) -> None:
        self._save_settings(model.config)
        save_pretrained(model, processor, folder)

    def load(self, folder: Path) -> PreTrainedModel:
        model = AutoModelForTokenClassification.from_pretrained(folder)
        self.restore(folder)
        return model

    def restore(self, folder: Path) -> None:
        """The tags in the model's output order, and the scheme they are written in."""
        config = AutoConfig.from_pretrained(folder)
        self.tags.names = [config.id2label[i] for i in range(len(config.id2label))]
        self.tags.scheme = getattr(config, "tunewise_tag_scheme", self.tags.scheme)

    def _save_settings(self, model_config: Any) -> None:
        model_config.num_labels = len(self.tags.names)
        model_config.id2label = dict(enumerate(self.tags.names))
        model_config.label2id = {name: i for i, name in enumerate(self.tags.names)}
        model_config.tunewise_tag_scheme = self.tags.scheme


class NerScoring:
    def __init__(self, tags: TagSet):
        self.tags = tags

    def run(self, model: nn.Module, processor: Any, split: EncodedSplit) -> Outputs:
        logits, loss = predict_logits(model, split)
        return Outputs(logits=logits, loss=loss)

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
            tags.append([self.tags.names[i] if keep else "O" for i, keep in zip(best, kept, strict=True)])
            scores.append(confidence)
        return tags, scores

    def metrics(self, outputs: Outputs, split: EncodedSplit) -> dict[str, Any]:
        predicted, _ = self.word_predictions(_per_row(outputs), split)
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

    def calibrate(self, outputs: Outputs, split: EncodedSplit) -> None:
        """Nothing to fit after training."""

    def present(self, outputs: Outputs, split: EncodedSplit) -> pd.DataFrame:
        """Per sentence: the predicted tags (one per word) and the entities, with character offsets into
        the sentence's text and the mean probability of their words' tags as the score."""
        tags, scores = self.word_predictions(_per_row(outputs), split)
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


class NerExplanation:
    """One target per predicted entity: the mean probability of its words' predicted tags, read where the
    task reads them (each word's first sub-token), so the explained score is the entity's presented
    score. A row without entities has no target; `label` keeps the entities of that type."""

    def __init__(self, reader: NerReader, scoring: NerScoring, tags: TagSet):
        self.reader = reader
        self.scoring = scoring
        self.tags = tags

    def targets(
        self, model: nn.Module, processor: Any, frame: pd.DataFrame, max_length: int, label: str | None = None
    ) -> list[TextExplanationTarget]:
        if label is not None and label not in self.tags.entity_types:
            raise ConfigError(
                f"entity type {label!r} is not one this model predicts; choose one of: "
                f"{', '.join(sorted(self.tags.entity_types))}."
            )
        split = self.reader.encode(frame, processor, max_length, "predict")
        logits = _per_row(self.scoring.run(model, processor, split))
        tags, _ = self.scoring.word_predictions(logits, split)
        places = word_places(processor, split.meta["words"], split.meta["offsets"], max_length)
        index = {name: i for i, name in enumerate(self.tags.names)}
        targets = []
        for row, (offsets, sequence_ids) in enumerate(places):
            text, spans, starts = split.meta["texts"][row], split.meta["offsets"][row], split.meta["word_starts"][row]
            for kind, first, last in conll.spans(tags[row]):
                if label is not None and kind != label:
                    continue
                words = range(first, last + 1)  # predicted entities hold kept words only: truncated ones are O
                positions = tuple(int(starts[word]) for word in words)
                classes = tuple(index[tags[row][word]] for word in words)
                targets.append(
                    TextExplanationTarget(
                        row=row,
                        name=f"{kind}: {text[spans[first][0] : spans[last][1]]}",
                        features=row_features(split, row),
                        output="logits",
                        positions=positions,
                        classes=classes,
                        activation="softmax",
                        offsets=offsets,
                        sequence_ids=sequence_ids,
                        texts=(text,),
                        probability=row_score(logits[row], positions, classes, "softmax"),
                    )
                )
        return targets


def entity_counts(tag_lists: list[list[str]]) -> Counter:
    """Entities per type over all sentences."""
    return Counter(kind for tags in tag_lists for kind, _, _ in conll.spans(tags))


def _per_row(outputs: Outputs) -> list[np.ndarray]:
    assert isinstance(outputs.logits, list), "token classification scores every token: one array per row"
    return outputs.logits
