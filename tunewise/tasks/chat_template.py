"""Conversations as tokens: the chat template, the loss mask, and the checks a person would do by eye.

The tokenizer's chat template renders each conversation (`apply_chat_template`), exactly as
inference will render it; a model without one takes a named template (`chatml`, `zephyr`,
`llama3`) or a Jinja string from the config, which is then saved with the model.

Which tokens are targets is found from the text, not guessed from token ids: for each assistant
turn k, the conversation up to turn k rendered with the generation prompt ends exactly where the
assistant's answer starts, and the conversation through turn k ends after its end-of-turn token.
Tokens of the whole rendering (offsets from the fast tokenizer) inside those spans are the
targets. That only holds when the template renders a prefix of a conversation the same way alone
as inside it, which is checked; the other checks: no example without targets, every assistant turn
closed by the end-of-turn token (so the model learns to stop), no doubled BOS.

The end-of-turn token is the first special token after an assistant's answer in a rendering
(ChatML's `<|im_end|>`, Llama 3's `<|eot_id|>`, Zephyr's `</s>`). A template that closes turns with
no special token gets the tokenizer's EOS appended to every assistant turn instead. The pad token
is never the EOS or the end-of-turn token, so no collator anywhere can mask stopping out of the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from tunewise.errors import ConfigError
from tunewise.tasks.chat import Message, generation_prompt

TrainOn = Literal["all_assistant", "last_assistant", "everything"]
PAD_TOKEN = "<|pad|>"

_CHATML = (
    r"{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    r"{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
_ZEPHYR = (
    r"{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    r"{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)
_LLAMA3 = (
    r"{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    r" + message['content'] + '<|eot_id|>' }}{% endfor %}"
    r"{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
# name -> (Jinja template, the special tokens it needs in the vocabulary)
NAMED_TEMPLATES: dict[str, tuple[str, tuple[str, ...]]] = {
    "chatml": (_CHATML, ("<|im_start|>", "<|im_end|>")),
    "zephyr": (_ZEPHYR, ("<|system|>", "<|user|>", "<|assistant|>")),
    "llama3": (_LLAMA3, ("<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")),
}


@dataclass(frozen=True)
class ChatFormat:
    """How this tokenizer's template closes an assistant turn."""

    end_of_turn: int  # the token id that ends every assistant turn
    appended: bool  # the template has no end-of-turn token: tunewise appends the EOS after each turn


def set_up_tokenizer(tokenizer: Any, template: str, needs_template: bool) -> ChatFormat | None:
    """Apply `data.chat_template` (auto, none, a name or Jinja) and a pad token that is neither EOS nor
    end-of-turn; the ChatFormat when conversations are rendered with a template, else None. Special
    tokens a named template needs are added to the vocabulary (the model's embeddings grow to match)."""
    if template == "none":
        tokenizer.chat_template = None
    elif template in NAMED_TEMPLATES:
        jinja, tokens = NAMED_TEMPLATES[template]
        missing = [token for token in tokens if token not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing})
        tokenizer.chat_template = jinja
    elif template != "auto":
        tokenizer.chat_template = template
    chat = _chat_format(tokenizer) if tokenizer.chat_template else None
    if chat is None and needs_template:
        raise ConfigError(
            "data.chat_template: the model has no chat template to render conversations with. Set "
            f"data.chat_template to one of {', '.join(NAMED_TEMPLATES)} (chatml is the common choice) or to a Jinja "
            "template."
        )
    _set_pad_token(tokenizer, chat)
    return chat


def _chat_format(tokenizer: Any) -> ChatFormat:
    """Find the end-of-turn token from a rendering of a one-turn exchange."""
    answer = "tunewise-probe-answer"
    try:
        text = render(tokenizer, [{"role": "user", "content": "hi"}, {"role": "assistant", "content": answer}])
    except Exception as error:  # a Jinja template can raise anything
        raise ConfigError(f"data.chat_template: the template does not render a conversation ({error}).") from None
    suffix = text[text.rindex(answer) + len(answer) :]
    special = set(tokenizer.all_special_ids)
    after = tokenizer(suffix, add_special_tokens=False)["input_ids"]
    closing = next((token for token in after if token in special), None)
    if closing is not None:
        return ChatFormat(end_of_turn=closing, appended=False)
    if tokenizer.eos_token_id is None:
        raise ConfigError(
            "data.chat_template: the template closes assistant turns with no special token and the tokenizer has no "
            "EOS to append, so the model could never learn to stop. Use a template with an end-of-turn token."
        )
    return ChatFormat(end_of_turn=tokenizer.eos_token_id, appended=True)


def _set_pad_token(tokenizer: Any, chat: ChatFormat | None) -> None:
    stops = {tokenizer.eos_token_id, chat.end_of_turn if chat else None} - {None}
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stops:
        return
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id not in stops:
        tokenizer.pad_token = tokenizer.unk_token
        return
    tokenizer.add_special_tokens({"pad_token": PAD_TOKEN})


def render(tokenizer: Any, messages: list[Message], generation: bool = False) -> str:
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=generation)
    return str(text)


class ExampleProblem(Exception):
    """Why one conversation cannot be trained on as rendered; `kind` groups rows in the data check."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Rendered:
    """One example as tokens: ids, which are targets, and where the last assistant turn's targets start."""

    ids: list[int]
    targets: list[bool]
    last_answer_start: int  # the first target token of the last assistant turn (what cut_prompt must keep)


def render_conversation(tokenizer: Any, chat: ChatFormat, messages: list[Message], train_on: TrainOn) -> Rendered:
    """The conversation rendered by the template, tokenised, with the loss mask (see the module docstring)."""
    try:
        full = render(tokenizer, messages)
        spans = _answer_spans(tokenizer, messages, full)
    except ExampleProblem:
        raise
    except Exception as error:  # the template refused the conversation (roles must alternate, ...)
        raise ExampleProblem("template_error", f"the chat template refused the conversation: {error}") from None
    encoded = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    tokens, offsets = list(encoded["input_ids"]), list(encoded["offset_mapping"])
    bos = tokenizer.bos_token_id
    if bos is not None and tokens[:2] == [bos, bos]:
        raise ExampleProblem("doubled_bos", "the rendering starts with two BOS tokens")
    chosen = spans[-1:] if train_on == "last_assistant" else spans
    ids: list[int] = []
    targets: list[bool] = []
    last_start = None
    for position, (token, (start, end)) in enumerate(zip(tokens, offsets, strict=True)):
        inside = next((span for span in chosen if start < span[1] and end > span[0]), None)
        if inside == chosen[-1] and last_start is None:
            last_start = len(ids)
        ids.append(token)
        targets.append(train_on == "everything" or inside is not None)
        if chat.appended and inside is not None and _last_token_of(inside, offsets, position):
            ids.append(chat.end_of_turn)
            targets.append(True)
    if last_start is None:
        raise ExampleProblem("no_targets", "no token of the assistant's answer is a target")
    if not chat.appended:
        _check_closed(ids, targets, chat.end_of_turn, train_on)
    return Rendered(ids, targets, last_start)


def _answer_spans(tokenizer: Any, messages: list[Message], full: str) -> list[tuple[int, int]]:
    """Character spans, in the full rendering, of each assistant turn that follows a user turn: its
    answer and end-of-turn token."""
    spans = []
    for k, message in enumerate(messages):
        if message["role"] != "assistant" or not any(m["role"] == "user" for m in messages[:k]):
            continue
        before = render(tokenizer, messages[:k], generation=True)
        through = render(tokenizer, messages[: k + 1])
        if not (full.startswith(before) and full.startswith(through) and through.startswith(before)):
            raise ExampleProblem(
                "template_mismatch",
                f"the template renders the conversation before assistant turn {k + 1} differently alone than inside "
                "the whole conversation, so the prompt the model learns from is not the one it will be given",
            )
        spans.append((len(before), len(through.rstrip())))
    if not spans:
        raise ExampleProblem("no_targets", "no assistant turn follows a user turn")
    return spans


def _last_token_of(span: tuple[int, int], offsets: list[Any], position: int) -> bool:
    following = offsets[position + 1] if position + 1 < len(offsets) else None
    return following is None or following[0] >= span[1]


def _check_closed(ids: list[int], targets: list[bool], end_of_turn: int, train_on: TrainOn) -> None:
    """Every run of target tokens (an assistant turn) must end with the end-of-turn token."""
    if train_on == "everything":
        return
    for position, is_target in enumerate(targets):
        closes_a_turn = is_target and (position + 1 == len(targets) or not targets[position + 1])
        if closes_a_turn and ids[position] != end_of_turn:
            raise ExampleProblem(
                "missing_end_of_turn",
                "an assistant turn does not end with the end-of-turn token, so the model would not learn to stop",
            )


def prompt_ids(tokenizer: Any, messages: list[Message]) -> list[int]:
    """The tokens generation starts from: the turns before the last answer, then the assistant's header."""
    prompt, _ = generation_prompt(messages)
    return list(tokenizer(render(tokenizer, prompt, generation=True), add_special_tokens=False)["input_ids"])
