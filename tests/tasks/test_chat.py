"""Chat data for causal LMs: every format read into one conversation form, each bad row named, and the
loss mask of a rendered conversation checked token by token."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import write_jsonl
from transformers import AutoTokenizer

from tunewise.errors import ConfigError, DataError
from tunewise.tasks import chat
from tunewise.tasks.chat_template import (
    ChatFormat,
    ExampleProblem,
    prompt_ids,
    render,
    render_conversation,
    set_up_tokenizer,
)

CONVERSATION = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "say good"},
    {"role": "assistant", "content": "good good"},
    {"role": "user", "content": "say bad"},
    {"role": "assistant", "content": "bad bad"},
]


def frame(rows: list[dict]) -> pd.DataFrame:
    data = pd.DataFrame(rows)
    data["_row"] = range(1, len(rows) + 1)
    return data


def read(rows: list[dict], data_format: chat.Format, labelled: bool = True) -> list[list[chat.Message]]:
    return chat.conversations(frame(rows), data_format, "prompt", "completion", labelled, "train data 'x.jsonl'")


@pytest.fixture
def tokenizer(tiny_llama_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_llama_dir)


# ------------------------------------------------------------------------------------------ formats


def test_the_format_is_detected_from_the_columns() -> None:
    detect = chat.detect_format
    assert detect(["messages", "id"], "prompt", "completion", "text") == "messages"
    assert detect(["conversations"], "prompt", "completion", "text") == "sharegpt"
    assert detect(["instruction", "input", "output"], "prompt", "completion", "text") == "alpaca"
    assert detect(["prompt", "completion"], "prompt", "completion", "text") == "prompt_completion"
    assert detect(["q", "a"], "q", "a", "text") == "prompt_completion"
    assert detect(["text"], "prompt", "completion", "text") == "text"
    assert detect(["prompt"], "prompt", "completion", "text", labelled=False) == "prompt_completion"
    with pytest.raises(DataError, match=r"fit no data format.*'messages'.*'conversations'.*'instruction' and 'output'"):
        detect(["question", "answer"], "prompt", "completion", "text")


def test_every_format_becomes_the_same_conversation() -> None:
    expected = [{"role": "user", "content": "say good"}, {"role": "assistant", "content": "good good"}]
    assert read([{"messages": expected}], "messages") == [expected]
    sharegpt = [{"from": "human", "value": "say good"}, {"from": "gpt", "value": "good good"}]
    assert read([{"conversations": sharegpt}], "sharegpt") == [expected]
    assert read([{"prompt": "say good", "completion": "good good"}], "prompt_completion") == [expected]
    assert read([{"instruction": "say good", "input": "", "output": "good good"}], "alpaca") == [expected]
    with_input = read([{"instruction": "translate", "input": "gut", "output": "good"}], "alpaca")[0]
    assert with_input[0]["content"] == "translate\n\ngut"


def test_bad_rows_are_named_with_what_is_wrong() -> None:
    rows = [
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "bot", "content": "hello"}]},
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "  "}]},
        {"messages": [{"role": "user", "content": "hi"}]},
        {"messages": "hi"},
        {
            "messages": [
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "yo"},
                {"role": "user", "content": "and?"},
            ]
        },
        {"messages": [{"role": "user", "content": 3}]},
    ]
    with pytest.raises(DataError) as error:
        read(rows, "messages")
    message = str(error.value)
    assert message.startswith("train data 'x.jsonl': ")
    assert "row 2: unknown role 'bot'" in message
    assert "row 3: an assistant turn is empty" in message
    assert "row 4: no assistant turn" in message
    assert "row 5: expected a non-empty list of turns" in message
    assert "row 6: the conversation ends with a user turn after the assistant's last answer" in message
    assert "row 7: a turn's 'content' must be text, not int" in message
    assert "row 1" not in message


def test_prediction_inputs_need_no_answer() -> None:
    assert read([{"messages": [{"role": "user", "content": "hi"}]}], "messages", labelled=False)
    assert read([{"prompt": "hi"}], "prompt_completion", labelled=False) == [[{"role": "user", "content": "hi"}]]
    with pytest.raises(DataError, match="'prompt' is empty"):
        read([{"prompt": ""}], "prompt_completion", labelled=False)


def test_the_prompt_and_reference_of_a_conversation() -> None:
    prompt, reference = chat.generation_prompt(CONVERSATION)
    assert prompt == CONVERSATION[:-1] and reference == "bad bad"
    assert chat.last_user_turn(CONVERSATION) == "say bad"
    assert chat.prompt_and_response(CONVERSATION) == ("be brief\nsay good\nsay bad", "good good\nbad bad")


# ------------------------------------------------------------------------------------------ the template


def expected_tokens(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[bool]]:
    """Token ids and targets of a rendering given as (text, is_target) pieces that split at token boundaries."""
    ids, targets = [], []
    for text, target in pieces:
        piece = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids += piece
        targets += [target] * len(piece)
    return ids, targets


def chatml_pieces(messages: list[chat.Message], targets: set[int]) -> list[tuple[str, bool]]:
    pieces = []
    for index, message in enumerate(messages):
        pieces.append((f"<|im_start|>{message['role']}\n", False))
        closes = index in targets
        pieces.append((message["content"] + "<|im_end|>", closes))
        pieces.append(("\n", False))
    return pieces


@pytest.mark.parametrize(
    ("train_on", "target_turns"),
    [("all_assistant", {2, 4}), ("last_assistant", {4}), ("everything", None)],
)
def test_the_loss_mask_of_a_multi_turn_conversation_token_by_token(tokenizer, train_on, target_turns) -> None:
    chat_format = set_up_tokenizer(tokenizer, "chatml", needs_template=True)
    assert chat_format == ChatFormat(tokenizer.convert_tokens_to_ids("<|im_end|>"), appended=False)
    rendered = render_conversation(tokenizer, chat_format, CONVERSATION, train_on)
    ids, targets = expected_tokens(tokenizer, chatml_pieces(CONVERSATION, target_turns or set()))
    assert rendered.ids == ids
    assert rendered.targets == (targets if target_turns is not None else [True] * len(ids))
    answer = [token for token, target in zip(rendered.ids, rendered.targets, strict=True) if target]
    end, words = chat_format.end_of_turn, tokenizer(["good good", "bad bad"], add_special_tokens=False)["input_ids"]
    if train_on == "all_assistant":  # each answer and the token that ends it: the model learns to stop
        assert answer == [*words[0], end, *words[1], end]
    if train_on == "last_assistant":
        assert answer == [*words[1], end]
    first_target = rendered.targets.index(True) if train_on == "last_assistant" else None
    assert first_target is None or rendered.last_answer_start == first_target


def test_a_template_without_an_end_of_turn_token_gets_the_eos_appended(tokenizer) -> None:
    plain = "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\n' }}{% endfor %}"
    plain += "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    chat_format = set_up_tokenizer(tokenizer, plain, needs_template=True)
    assert chat_format == ChatFormat(tokenizer.eos_token_id, appended=True)
    rendered = render_conversation(tokenizer, chat_format, CONVERSATION[1:3], "all_assistant")
    answer = [token for token, target in zip(rendered.ids, rendered.targets, strict=True) if target]
    assert answer == tokenizer("good good", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]


def test_a_template_that_renders_a_prefix_differently_is_caught(tokenizer) -> None:
    # the system line appears only once the conversation has an answer: a prompt alone renders differently
    shifty = (
        "{% if messages[-1]['role'] == 'assistant' %}{{ 'system: hello\n' }}{% endif %}"
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '[SEP]' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    )
    chat_format = set_up_tokenizer(tokenizer, shifty, needs_template=True)
    with pytest.raises(ExampleProblem) as problem:
        render_conversation(tokenizer, chat_format, CONVERSATION[1:3], "all_assistant")
    assert problem.value.kind == "template_mismatch"


def test_a_doubled_bos_is_caught(tokenizer) -> None:
    tokenizer.bos_token = "[CLS]"
    doubled = "{{ bos_token + bos_token }}" + "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '[SEP]' }}"
    doubled += "{% endfor %}{% if add_generation_prompt %}{{ 'assistant: ' }}{% endif %}"
    chat_format = set_up_tokenizer(tokenizer, doubled, needs_template=True)
    with pytest.raises(ExampleProblem) as problem:
        render_conversation(tokenizer, chat_format, CONVERSATION[1:3], "all_assistant")
    assert problem.value.kind == "doubled_bos"


def test_a_model_without_a_template_is_told_which_to_set(tokenizer) -> None:
    with pytest.raises(ConfigError, match=r"data.chat_template to one of chatml, zephyr, llama3"):
        set_up_tokenizer(tokenizer, "auto", needs_template=True)
    assert set_up_tokenizer(tokenizer, "auto", needs_template=False) is None  # prompt/completion as plain text


@pytest.mark.parametrize("name", ["chatml", "zephyr", "llama3"])
def test_named_templates_add_their_tokens_and_render_the_prompt_as_inference_will(tokenizer, name) -> None:
    before = len(tokenizer)
    chat_format = set_up_tokenizer(tokenizer, name, needs_template=True)
    assert chat_format is not None and not chat_format.appended
    assert len(tokenizer) >= before
    rendered = render_conversation(tokenizer, chat_format, CONVERSATION[1:3], "all_assistant")
    prompt = prompt_ids(tokenizer, CONVERSATION[1:3])
    assert rendered.ids[: len(prompt)] == prompt  # training saw exactly the prompt generation will start from
    assert rendered.targets[len(prompt)] and not rendered.targets[len(prompt) - 1]
    assert rendered.ids[max(i for i, t in enumerate(rendered.targets) if t)] == chat_format.end_of_turn


def test_the_pad_token_is_never_the_eos_or_the_end_of_turn(tiny_gpt2_dir: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    tokenizer.pad_token = tokenizer.eos_token  # as many checkpoints ship it: padding would mask stopping
    tokenizer.unk_token = tokenizer.eos_token
    chat_format = set_up_tokenizer(tokenizer, "chatml", needs_template=True)
    assert chat_format is not None
    assert tokenizer.pad_token_id not in (tokenizer.eos_token_id, chat_format.end_of_turn)
    assert tokenizer.pad_token == "<|pad|>"


def test_render_uses_the_template_the_tokenizer_carries(tokenizer) -> None:
    set_up_tokenizer(tokenizer, "chatml", needs_template=True)
    assert (
        render(tokenizer, CONVERSATION[1:2], generation=True)
        == "<|im_start|>user\nsay good<|im_end|>\n<|im_start|>assistant\n"
    )


def test_jsonl_chat_files_read_through_the_task(tmp_path: Path, tiny_llama_dir: Path) -> None:
    from tunewise.tasks import load_config, make_task

    rows = [{"messages": CONVERSATION}, {"messages": CONVERSATION[1:3]}]
    path = write_jsonl(tmp_path / "chat.jsonl", rows)
    config = {"task": "causal-lm", "model": str(tiny_llama_dir), "data": {"train": path, "chat_template": "chatml"}}
    task = make_task(load_config(config))
    read_frame = task.data.read(path, "train")
    assert task.data.format == "messages"
    assert read_frame["prompt"].tolist()[1] == "say good" and read_frame["response"].tolist()[1] == "good good"
    assert task.facts().text_columns == ("prompt", "response")  # the shared checks read both
