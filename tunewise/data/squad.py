"""Read extractive question-answering data: SQuAD JSON (v1.1, v2.0) and JSON lines.

SQuAD JSON is `{"data": [{"title", "paragraphs": [{"context", "qas": [{"id", "question",
"answers": [{"text", "answer_start"}], "is_impossible"}]}]}]}`, as distributed (`.json`,
gzipped `.json.gz`, or zipped `.zip` with one .json inside). Any other table format tunewise
reads (JSONL, CSV, Parquet, hf:) works with columns `question`, `context` and `answers`, where
`answers` is a list of {"text", "answer_start"} records or the Hugging Face form
{"text": [...], "answer_start": [...]}. An empty list marks an unanswerable question (SQuAD 2.0).

Every question becomes one row: id, title (the article, when known), question, context, answers
(a list of {"text", "answer_start"}) and `_row`, its 1-based number in the file. The article title
is the frame's group column, so a held-out validation split never shares an article with train.
Answers whose `answer_start` does not point at their text, and empty contexts, are errors: a span
learnt at the wrong place teaches the model the wrong thing silently.
"""

from __future__ import annotations

import gzip
import json
import zipfile
from pathlib import Path
from typing import Any

import pandas as pd

from tunewise.data.readers import ROW_COLUMN, read_table
from tunewise.errors import DataError

QUESTION, CONTEXT, ANSWERS, TITLE, ID = "question", "context", "answers", "title", "id"
CITE_LIMIT = 5


def read_qa(source: str, split: str, with_answers: bool = True) -> pd.DataFrame:
    """One row per question, validated; errors name the file, the question and the fix."""
    where = f"{split} data {source!r}"
    document = _squad_document(Path(source), where) if not source.startswith("hf:") else None
    if document is not None:
        frame = _flatten_squad(document, where, with_answers)
        unit = "question"
    else:
        frame = read_table(source, split, [], None)
        unit = frame.attrs["row_unit"]
        frame = _table_columns(frame, where, unit, with_answers)
    if with_answers:
        check_answers(frame, where, unit)
    frame.attrs.update(source=where, row_unit=unit)
    if TITLE in frame.columns and frame[TITLE].notna().all():
        frame.attrs["group_column"] = TITLE  # validation held out from train keeps articles whole
    return frame


def _squad_document(path: Path, where: str) -> dict | None:
    """The parsed SQuAD document when `path` is one (.json, .json.gz, .zip); None for other files."""
    name = path.name.lower()
    if not path.is_file() or not name.endswith((".json", ".json.gz", ".zip")):
        return None
    raw = path.read_bytes()
    if name.endswith(".zip"):
        raw = _unzip_json(path, where)
    elif name.endswith(".gz"):
        raw = gzip.decompress(raw)
    try:
        document = json.loads(raw.decode("utf-8-sig"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        if name.endswith(".zip"):
            raise DataError(f"{where}: the .json inside the zip is not valid UTF-8 JSON; re-export it.") from None
        return None  # JSON lines in a .json file: the table reader reports what is wrong
    if isinstance(document, dict) and "data" in document:
        return document
    if name.endswith(".zip"):
        raise DataError(
            f'{where}: the zipped JSON is not SQuAD ({{"data": [articles]}}). Unzip it and give the file itself, '
            "or zip a SQuAD JSON file."
        )
    return None


def _unzip_json(path: Path, where: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.lower().endswith(".json") and not n.startswith("__MACOSX")]
            if len(names) != 1:
                raise DataError(
                    f"{where}: a zipped SQuAD file must hold exactly one .json file; this one holds "
                    f"{len(names)} ({', '.join(names) or 'none'}). Zip one file, or unzip and give its path."
                )
            return archive.read(names[0])
    except zipfile.BadZipFile:
        raise DataError(f"{where}: the file ends in .zip but is not a zip archive. Re-create it or unzip it.") from None


def _flatten_squad(document: dict, where: str, with_answers: bool) -> pd.DataFrame:
    articles = document["data"]
    if not isinstance(articles, list):
        raise DataError(f'{where}: "data" must be a list of articles, each {{"title", "paragraphs"}}.')
    records: list[dict[str, Any]] = []
    for a, article in enumerate(articles, start=1):
        title = str(article.get(TITLE) or f"article {a}") if isinstance(article, dict) else None
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise DataError(f"{where}: article {a} has no \"paragraphs\" list; each article is {{\"title\", "
                            "\"paragraphs\": [{\"context\", \"qas\"}]}.")  # fmt: skip
        for p, paragraph in enumerate(paragraphs, start=1):
            place = f"article {title!r}, paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("qas"), list):
                raise DataError(f'{where}: {place} has no "qas" list of questions. Add it or remove the paragraph.')
            context = paragraph.get(CONTEXT)
            for q, qa in enumerate(paragraph["qas"], start=1):
                if not isinstance(qa, dict):
                    raise DataError(f'{where}: {place}, question {q} is not an object {{"id", "question", ...}}.')
                answers = qa.get(ANSWERS) or []
                if qa.get("is_impossible"):  # v2.0 keeps plausible (wrong) answers apart: never a target
                    answers = []
                records.append(
                    {
                        ID: str(qa.get(ID, f"{a}.{p}.{q}")),
                        TITLE: title,
                        QUESTION: qa.get(QUESTION),
                        CONTEXT: context,
                        ANSWERS: _answer_records(answers, f"{where}: {place}, question {qa.get(ID, q)!r}"),
                    }
                )
    if not records:
        raise DataError(f"{where}: the SQuAD file holds no questions. Point the config at the file with your data.")
    frame = pd.DataFrame.from_records(records)
    frame[ROW_COLUMN] = range(1, len(frame) + 1)
    for column in (QUESTION, CONTEXT):
        _check_text(frame, column, where, "question")
    return frame


def _table_columns(frame: pd.DataFrame, where: str, unit: str, with_answers: bool) -> pd.DataFrame:
    """question and context (non-empty text), answers when labelled, and an id for every row."""
    needed = [QUESTION, CONTEXT, *([ANSWERS] if with_answers else [])]
    missing = [column for column in needed if column not in frame.columns]
    if missing:
        raise DataError(
            f"{where}: column(s) {', '.join(map(repr, missing))} not found; the file has "
            f"{', '.join(repr(c) for c in frame.columns if c != ROW_COLUMN)}. Question answering reads {QUESTION!r}, "
            f'{CONTEXT!r} and {ANSWERS!r} (a list of {{"text", "answer_start"}}, [] when unanswerable); '
            "rename the columns, or give SQuAD JSON."
        )
    for column in (QUESTION, CONTEXT):
        _check_text(frame, column, where, unit)
    if ANSWERS not in frame.columns:
        return frame
    frame[ANSWERS] = [
        _answer_records(value, f"{where}, {unit} {row}") if with_answers or _present(value) else []
        for value, row in zip(frame[ANSWERS], frame[ROW_COLUMN], strict=True)
    ]
    return frame


def _present(value: Any) -> bool:
    return value is not None and not (isinstance(value, float) and value != value)


def _answer_records(value: Any, where: str) -> list[dict[str, Any]]:
    """Answers as a list of {"text", "answer_start"}; the Hugging Face column form is accepted too."""
    if isinstance(value, dict) and isinstance(value.get("text"), list):
        starts = value.get("answer_start")
        if not isinstance(starts, list) or len(starts) != len(value["text"]):
            raise DataError(f"{where}: answers has {len(value['text'])} text(s) but not as many answer_start values.")
        value = [{"text": t, "answer_start": s} for t, s in zip(value["text"], starts, strict=True)]
    if not isinstance(value, list):
        raise DataError(
            f'{where}: answers must be a list of {{"text": ..., "answer_start": ...}} (got {type(value).__name__}).'
            " Use [] for an unanswerable question."
        )
    records = []
    for answer in value:
        start = answer.get("answer_start") if isinstance(answer, dict) else None
        if not isinstance(answer, dict) or not isinstance(answer.get("text"), str) or not _is_index(start):
            raise DataError(
                f'{where}: the answer {answer!r} needs a "text" string and an integer "answer_start" (the '
                "character where the text begins in the context)."
            )
        assert start is not None
        records.append({"text": answer["text"], "answer_start": int(start)})
    return records


def _is_index(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (isinstance(value, float) and value.is_integer())


def _check_text(frame: pd.DataFrame, column: str, where: str, unit: str) -> None:
    ids = frame[ID] if ID in frame.columns else [None] * len(frame)
    bad = [
        (row, qid)
        for row, qid, text in zip(frame[ROW_COLUMN], ids, frame[column], strict=True)
        if not isinstance(text, str) or not text.strip()
    ]
    if bad:
        cited = ", ".join(
            f"{unit} {row}" + (f" (id {qid})" if qid is not None else "") for row, qid in bad[:CITE_LIMIT]
        )
        more = f" and {len(bad) - CITE_LIMIT} more" if len(bad) > CITE_LIMIT else ""
        raise DataError(
            f"{where}: {len(bad)} question(s) have an empty, missing or non-text {column}: {cited}{more}. "
            f"Fill in the {column} or remove those questions."
        )


def check_answers(frame: pd.DataFrame, where: str, unit: str) -> None:
    """Every answer's text must stand in its context at answer_start; all problems in one message."""
    problems = []
    for row, context, answers in zip(frame[ROW_COLUMN], frame[CONTEXT], frame[ANSWERS], strict=True):
        for answer in answers:
            start, text = answer["answer_start"], answer["text"]
            if not text.strip():
                problems.append((row, f"empty answer text at {start}"))
            elif context[start : start + len(text)] != text:
                found = context.find(text)
                hint = f"; the text first occurs at {found}" if found >= 0 else "; the text is not in the context"
                problems.append((row, f"answer_start {start} points at {context[start : start + len(text)]!r}, "
                                      f"not {text!r}{hint}"))  # fmt: skip
    if problems:
        cited = "; ".join(f"{unit} {row}: {what}" for row, what in problems[:CITE_LIMIT])
        more = f"; and {len(problems) - CITE_LIMIT} more" if len(problems) > CITE_LIMIT else ""
        raise DataError(
            f"{where}: {len(problems)} answer(s) do not match their context at answer_start ({cited}{more}). "
            "answer_start is the 0-based character offset of the answer text in the context: correct it (or the "
            "text), or remove those answers."
        )
