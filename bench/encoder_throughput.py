"""Benchmark: training throughput of a BERT-base-shaped encoder on SST-2 lengths, Trainer against tunewise.

    python bench/encoder_throughput.py                     # 20,000 SST-2 rows, 1 epoch (meant for a GPU)
    python bench/encoder_throughput.py --rows 256          # a CPU smoke run

A randomly initialised BERT-base (12 layers, hidden 768, 110M parameters; the weights do not change
the speed) gets the MiniLM package's tokenizer, which is BERT's uncased vocabulary, and is trained
on real SST-2 sentences by the contenders of bench/text_classification.py: Trainer as tutorials use
it, Trainer tuned by hand, and tunewise with its batch chosen for the hardware. The table's
samples/s and MFU (real tokens only) are the result; accuracy of a randomly initialised model after
one short epoch means nothing here. Writes bench/results/encoder_throughput.json.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import text_classification  # the sibling benchmark does the work

RESULTS_FILE = Path(__file__).resolve().parent / "results" / "encoder_throughput.json"


def build_bert_base(tokenizer_dir: str, folder: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer))).save_pretrained(folder)  # BertConfig() is BERT-base
    tokenizer.save_pretrained(folder)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default="20000", help="SST-2 training rows (default 20000)")
    parser.add_argument("--epochs", default="1")
    parser.add_argument("--contenders", nargs="+", default=["trainer-tutorial", "trainer-expert", "tunewise-auto"])
    parser.add_argument("--tokenizer", help="tokenizer folder (default: the MiniLM package's)")
    args, rest = parser.parse_known_args()
    with tempfile.TemporaryDirectory(prefix="bench-bert-base-") as scratch:
        model = build_bert_base(text_classification.model_path(args.tokenizer), Path(scratch, "bert-base"))
        text_classification.main(
            ["--model", str(model), "--rows", args.rows, "--epochs", args.epochs, "--output", str(RESULTS_FILE),
             "--contenders", *args.contenders, *rest]
        )  # fmt: skip


if __name__ == "__main__":
    main()
