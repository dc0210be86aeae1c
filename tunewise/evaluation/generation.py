"""Metrics for generated text, and the trivial baselines a generative run is reported beside.

Each metric answers a different question, so a run reports all of them:

- **exact_match**: how often the output is the reference, whitespace aside. The honest number for
  short, closed answers (labels, entities, code); near zero for free text, where it is not a goal.
- **ROUGE-1 / ROUGE-2** (unigram / bigram overlap F-measure, Porter-stemmed): the summarisation
  standard; recall-leaning content overlap, with stemming so "runs" and "running" count together.
- **ROUGE-L** (longest common subsequence over the whole text) and **ROUGE-Lsum** (union LCS
  sentence by sentence): word order at text level and at sentence level. Papers that say "ROUGE-L"
  for summaries usually mean ROUGE-Lsum; reporting both removes the ambiguity. rouge-score needs the
  sentences one per line for ROUGE-Lsum; its own `split_summaries` needs NLTK's punkt data, which
  cannot be downloaded offline, so `split_sentences` (a small regex splitter) does it here. ROUGE is
  for English: rouge-score's tokeniser keeps only ASCII letters and digits (other letters are dropped),
  so for other languages chrF is the number to read.
- **BLEU** and **chrF** (sacrebleu, corpus level): the translation standards, n-gram precision with
  a brevity penalty and character n-gram F-score (kinder to morphology and to short outputs). A
  corpus BLEU is not a mean of sentence BLEUs; sacrebleu's signature (tokeniser, smoothing, version)
  is returned with the scores because BLEU numbers are comparable only under the same signature.

All scores are on a 0-100 scale, as the field prints them.

The baselines are there because a fine-tuned generator must beat doing nothing clever: a run must not
claim a gain that a trivial baseline already has. **copy_source** (output the input unchanged) is the
floor for translation and editing tasks, where source and target share names, numbers and much of
their wording. **lead_3** (the first three sentences) is the floor for summarisation, and a strong one
on news: journalists put the key facts first and reference summaries reuse lead sentences.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
_DECIMALS = 4

_WHITESPACE = re.compile(r"\s+")
# A candidate end of sentence: the word before it, terminal punctuation with any closing quotes or
# brackets, then whitespace. Whether it really ends a sentence is `_ends_sentence`'s call.
_SENTENCE_END = re.compile(r"(?P<word>\S*?)(?P<end>[.!?]+)[\"'\u201d\u2019)\]]*\s+")
_OPENING_QUOTES = "\"'\u201c\u2018(["
# Words whose trailing period does not end a sentence (lower-cased, without the period). "no" is left
# out: a sentence ends in "no" more often than "No." abbreviates a number.
_ABBREVIATIONS = frozenset(
    {"mr", "mrs", "ms", "dr", "st", "prof", "sr", "jr", "rev", "gen", "col", "capt", "lt", "sgt", "gov", "sen"}
    | {"rep", "hon", "vs", "etc", "inc", "ltd", "co", "corp", "fig", "approx", "jan", "feb", "apr", "jun", "jul"}
    | {"aug", "sep", "sept", "oct", "nov", "dec", "mt", "ft", "ave", "cf", "al"}
)
# Dotted initialisms (U.S, e.g, i.e, a.m) and single initials (George W. Bush): never a sentence end.
_INITIALISM = re.compile(r"(?:[A-Za-z]\.)*[A-Za-z]")


def normalise_whitespace(text: str) -> str:
    """Strip and collapse runs of whitespace to one space: layout is not content."""
    return _WHITESPACE.sub(" ", text).strip()


def _ends_sentence(line: str, end: re.Match[str]) -> bool:
    """Whether the candidate boundary `end` in `line` is a real sentence end."""
    following = line[end.end() : end.end() + 1]
    if not (following.isupper() or following.isdigit() or following in _OPENING_QUOTES):
        return False
    if not end["end"].startswith("."):
        return True
    word = end["word"].lstrip(_OPENING_QUOTES)
    return word.lower() not in _ABBREVIATIONS and _INITIALISM.fullmatch(word) is None


def split_sentences(text: str) -> list[str]:
    """Sentences of `text`, each on one line with whitespace normalised.

    A regex splitter rather than NLTK's punkt, whose data cannot be downloaded offline. It splits on
    newlines and after . ! ? (with any closing quotes or brackets) followed by whitespace and an
    uppercase letter, a digit or an opening quote; never after a known abbreviation or an initialism
    (Mr. Dr. U.S. e.g.). A point with no whitespace after it never splits: 3.5 and U.S.A stay whole,
    and so do sentences glued together by a careless join ("...$10.9bn.For the full year"), which
    the caller must repair in the data."""
    sentences: list[str] = []
    for line in text.splitlines():
        start = 0
        for end in _SENTENCE_END.finditer(line):
            if _ends_sentence(line, end):
                sentences.append(line[start : end.end()])
                start = end.end()
        sentences.append(line[start:])
    return [sentence for sentence in map(normalise_whitespace, sentences) if sentence]


def lead_sentences(text: str, n: int = 3) -> str:
    """The first `n` sentences joined by a space: the lead-n summarisation baseline."""
    return " ".join(split_sentences(text)[:n])


def _one_sentence_per_line(text: str) -> str:
    return "\n".join(split_sentences(text))


def generation_metrics(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """Exact match, ROUGE-1/2/L/Lsum, BLEU and chrF of `predictions` against one reference each (0-100).

    Also returns the sacrebleu signatures of BLEU and chrF (under "sacrebleu") and the number of rows."""
    if len(predictions) != len(references):
        raise ValueError(
            f"{len(predictions)} predictions but {len(references)} references: need one reference per prediction"
        )
    if not predictions:
        raise ValueError("no predictions to score: generation metrics need at least one prediction and its reference")
    from rouge_score.rouge_scorer import RougeScorer
    from sacrebleu.metrics import BLEU, CHRF

    scorer = RougeScorer(list(ROUGE_TYPES), use_stemmer=True)
    rouge_totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    exact = 0
    for prediction, reference in zip(predictions, references, strict=True):
        exact += normalise_whitespace(prediction) == normalise_whitespace(reference)
        # One sentence per line is what ROUGE-Lsum needs; the other types are unchanged by it, because
        # rouge-score's tokeniser treats every non-alphanumeric character (newlines too) as a separator.
        # rouge-score takes the target first.
        scores = scorer.score(_one_sentence_per_line(reference), _one_sentence_per_line(prediction))
        for rouge_type in ROUGE_TYPES:
            rouge_totals[rouge_type] += scores[rouge_type].fmeasure
    rows = len(predictions)
    bleu, chrf = BLEU(), CHRF()
    bleu_score = bleu.corpus_score(list(predictions), [list(references)]).score
    chrf_score = chrf.corpus_score(list(predictions), [list(references)]).score
    return {
        "exact_match": round(100.0 * exact / rows, _DECIMALS),
        **{rouge_type: round(100.0 * total / rows, _DECIMALS) for rouge_type, total in rouge_totals.items()},
        "bleu": round(float(bleu_score), _DECIMALS),
        "chrf": round(float(chrf_score), _DECIMALS),
        "sacrebleu": {"bleu": str(bleu.get_signature()), "chrf": str(chrf.get_signature())},
        "rows": rows,
    }


def baseline_predictions(sources: Sequence[str]) -> dict[str, list[str]]:
    """The trivial baselines' outputs for `sources`: copy the input (translation) and lead-3 (summarisation)."""
    return {"copy_source": list(sources), "lead_3": [lead_sentences(source, 3) for source in sources]}
