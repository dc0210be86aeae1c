"""Chat and instruction data for causal LMs: the formats people keep it in, and one conversation form.

Every format becomes a list of messages `{"role": system|user|assistant, "content": str}`:

    messages       {"messages": [{"role": "user", "content": ...}, {"role": "assistant", ...}, ...]}
                   (OpenAI chat form; multi-turn, optional system turn)
    sharegpt       {"conversations": [{"from": "human", "value": ...}, {"from": "gpt", ...}]}
    alpaca         {"instruction": ..., "input": ..., "output": ...} (input optional)
    prompt_completion  {"prompt": ..., "completion": ...} (column names configurable)
    text           plain text for continued pre-training: no conversation at all

Detection goes by the columns (`detect_format`); a row that fits its format badly (an unknown role,
an empty assistant turn, no assistant turn to learn from) is an error that names the row, raised
while reading, before any tokenising.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import pandas as pd

from tunewise.data.readers import cite_rows
from tunewise.errors import DataError

Format = Literal["messages", "sharegpt", "alpaca", "prompt_completion", "text"]
FORMATS: tuple[Format, ...] = ("messages", "sharegpt", "alpaca", "prompt_completion", "text")
ROLES = ("system", "user", "assistant")
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}
MESSAGES_COLUMN = "messages"
SHAREGPT_COLUMN = "conversations"
ALPACA_COLUMNS = ("instruction", "input", "output")
MESSAGES = "_messages"  # the conversation each row became, beside the user's columns

Message = dict[str, str]


def detect_format(
    columns: Sequence[str], prompt_column: str, completion_column: str, text_column: str, labelled: bool = True
) -> Format:
    """The format the columns say, most specific first; an error listing what each format needs.
    Prediction inputs (`labelled` False) need no answer column: an instruction or a prompt is enough."""
    present = set(columns)
    if MESSAGES_COLUMN in present:
        return "messages"
    if SHAREGPT_COLUMN in present:
        return "sharegpt"
    if {"instruction", "output"} <= present or (not labelled and "instruction" in present):
        return "alpaca"
    if {prompt_column, completion_column} <= present or (not labelled and prompt_column in present):
        return "prompt_completion"
    if text_column in present:
        return "text"
    raise DataError(
        f"the columns ({', '.join(sorted(present)) or 'none'}) fit no data format. Give one of: "
        f"'{MESSAGES_COLUMN}' (chat messages), '{SHAREGPT_COLUMN}' (ShareGPT), 'instruction' and 'output' (Alpaca), "
        f"'{prompt_column}' and '{completion_column}' (prompt/completion), or '{text_column}' (plain text); or set "
        "data.format and the column names."
    )


def conversations(
    frame: pd.DataFrame,
    data_format: Format,
    prompt_column: str,
    completion_column: str,
    labelled: bool,
    where: str,
) -> list[list[Message]]:
    """Each row as messages. `labelled`: every conversation must end in an assistant turn to learn (or be
    scored) on; prediction inputs end in the turn the model answers."""
    rows = frame["_row"].tolist() if "_row" in frame.columns else list(range(1, len(frame) + 1))
    unit = frame.attrs.get("row_unit", "row")
    problems: dict[str, list[int]] = {}
    result: list[list[Message]] = []
    for row, record in zip(rows, frame.to_dict(orient="records"), strict=True):
        try:
            messages = _as_messages(record, data_format, prompt_column, completion_column, labelled)
            _check_turns(messages, labelled)
        except _RowProblem as problem:
            problems.setdefault(str(problem), []).append(row)
            messages = []
        result.append(messages)
    if problems:
        details = "; ".join(f"{cite_rows(found, unit)}: {problem}" for problem, found in problems.items())
        raise DataError(f"{where}: {details}.")
    return result


class _RowProblem(Exception):
    """What is wrong with one row; rows with the same problem are reported together."""


def _as_messages(
    record: dict[str, Any], data_format: Format, prompt_column: str, completion_column: str, labelled: bool
) -> list[Message]:
    if data_format == "messages":
        return _message_list(record.get(MESSAGES_COLUMN), "role", "content", dict(zip(ROLES, ROLES, strict=True)))
    if data_format == "sharegpt":
        return _message_list(record.get(SHAREGPT_COLUMN), "from", "value", SHAREGPT_ROLES)
    if data_format == "alpaca":
        instruction = _text(record.get("instruction"), "instruction")
        extra = record.get("input")
        prompt = f"{instruction}\n\n{extra.strip()}" if isinstance(extra, str) and extra.strip() else instruction
        messages = [{"role": "user", "content": prompt}]
        if labelled or _present(record.get("output")):
            messages.append({"role": "assistant", "content": _text(record.get("output"), "output")})
        return messages
    if data_format == "prompt_completion":
        messages = [{"role": "user", "content": _text(record.get(prompt_column), prompt_column)}]
        if labelled or _present(record.get(completion_column)):
            messages.append({"role": "assistant", "content": _text(record.get(completion_column), completion_column)})
        return messages
    raise ValueError(f"{data_format} rows are plain text, not conversations")


def _message_list(value: Any, role_key: str, content_key: str, roles: dict[str, str]) -> list[Message]:
    if hasattr(value, "tolist"):  # Parquet and datasets give arrays of dicts
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise _RowProblem(f"expected a non-empty list of turns, each {{'{role_key}': ..., '{content_key}': ...}}")
    messages = []
    for turn in value:
        if not isinstance(turn, dict) or role_key not in turn or content_key not in turn:
            raise _RowProblem(f"every turn needs '{role_key}' and '{content_key}'")
        role = turn[role_key]
        if role not in roles:
            raise _RowProblem(f"unknown role {role!r} (known: {', '.join(roles)})")
        content = turn[content_key]
        if not isinstance(content, str):
            raise _RowProblem(f"a turn's '{content_key}' must be text, not {type(content).__name__}")
        messages.append({"role": roles[role], "content": content})
    return messages


def _check_turns(messages: list[Message], labelled: bool) -> None:
    assistant = [m for m in messages if m["role"] == "assistant"]
    if any(not m["content"].strip() for m in assistant):
        raise _RowProblem("an assistant turn is empty: there is nothing to learn from it")
    if labelled and not assistant:
        raise _RowProblem("no assistant turn: there is nothing to learn from this conversation")
    if labelled and messages[-1]["role"] != "assistant":
        raise _RowProblem(
            f"the conversation ends with a {messages[-1]['role']} turn after the assistant's last answer; end it with "
            "the assistant's answer (turns after it teach nothing)"
        )
    if not any(m["role"] == "user" for m in messages):
        raise _RowProblem("no user turn: the model needs something to answer")


def _text(value: Any, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _RowProblem(f"'{column}' is empty or not text")
    return value


def _present(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def prompt_and_response(messages: list[Message]) -> tuple[str, str]:
    """The conversation as two texts for the shared data checks (duplicates, leakage, personal data):
    everything but the assistant's turns, and the assistant's turns."""
    prompt = "\n".join(m["content"] for m in messages if m["role"] != "assistant")
    response = "\n".join(m["content"] for m in messages if m["role"] == "assistant")
    return prompt, response


def generation_prompt(messages: list[Message]) -> tuple[list[Message], str | None]:
    """(the turns a model answers, the assistant's answer when the conversation holds one): the last
    assistant turn is the reference, everything before it the prompt."""
    if messages and messages[-1]["role"] == "assistant":
        return messages[:-1], messages[-1]["content"]
    return messages, None


def last_user_turn(messages: list[Message]) -> str:
    """The last user turn: the source the copy and lead-3 baselines repeat."""
    return next((m["content"] for m in reversed(messages) if m["role"] == "user"), "")
