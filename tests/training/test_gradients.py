"""Sparse backward into kept gradient buffers (training.gradients): the dense backward's gradients and
weights, the buffer kept across steps, tied and small tables left alone."""

from __future__ import annotations

import torch
from torch import nn

from tunewise.training.gradients import MIN_SPARSE_ROWS_ELEMENTS, SparseEmbeddingGradients

WIDTH = 16
ROWS = MIN_SPARSE_ROWS_ELEMENTS // WIDTH + 1  # the smallest word table that is switched


class WordsModel(nn.Module):
    def __init__(self, tied: bool = False):
        super().__init__()
        torch.manual_seed(0)
        self.words = nn.Embedding(ROWS, WIDTH, padding_idx=0)
        self.positions = nn.Embedding(8, WIDTH)  # small: stays dense
        self.head = nn.Linear(WIDTH, ROWS if tied else 3, bias=False)
        if tied:
            self.head.weight = self.words.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        hidden = self.words(ids) + self.positions(torch.arange(ids.shape[1]))
        return self.head(hidden.mean(dim=1))


def train(model: nn.Module, sparse: bool, steps: int = 3, accumulate: int = 1) -> tuple[list[dict], object]:
    """`steps` AdamW steps over the same batches (ids repeat within a batch; the last column is padding);
    the gradients each step saw."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, fused=True)
    kept = SparseEmbeddingGradients(model) if sparse else None
    generator = torch.Generator().manual_seed(1)
    seen = []
    for _ in range(steps):
        for _ in range(accumulate):
            ids = torch.randint(1, 40, (4, 8), generator=generator)
            ids[:, -1] = 0
            model(ids).logsumexp(dim=-1).mean().backward()
        seen.append({name: parameter.grad.clone() for name, parameter in model.named_parameters()})
        optimizer.step()
        if kept is None:
            optimizer.zero_grad(set_to_none=True)
        else:
            kept.zero(optimizer)
    return seen, kept


def test_sparse_backward_gives_the_dense_gradients_and_weights() -> None:
    dense_model, sparse_model = WordsModel(), WordsModel()
    for accumulate in (1, 2):  # gradient accumulation adds into the kept buffer in place
        dense, _ = train(dense_model, sparse=False, accumulate=accumulate)
        sparse, kept = train(sparse_model, sparse=True, accumulate=accumulate)
        for dense_step, sparse_step in zip(dense, sparse, strict=True):
            for name, gradient in dense_step.items():
                assert not sparse_step[name].is_sparse
                torch.testing.assert_close(sparse_step[name], gradient, rtol=1e-5, atol=1e-7)
        sparse_weights = sparse_model.state_dict()
        for name, weight in dense_model.state_dict().items():
            torch.testing.assert_close(sparse_weights[name], weight, rtol=1e-5, atol=1e-7, msg=name)
        assert kept.tables == [sparse_model.words]  # the position table is small
        assert sparse_model.words.weight.grad is kept.buffers[0]  # the same memory every step, zeroed
        assert not sparse_model.words.weight.grad.any()
        assert sparse_model.positions.weight.grad is None and not sparse_model.positions.sparse
        kept.release()
        assert not sparse_model.words.sparse and sparse_model.words.weight.grad is None


def test_tied_and_frozen_tables_keep_the_dense_backward() -> None:
    tied = WordsModel(tied=True)  # the head multiplies by the table: its gradient is dense anyway
    assert SparseEmbeddingGradients(tied).tables == []
    assert not tied.words.sparse and tied.words.weight.grad is None
    frozen = WordsModel()
    frozen.words.weight.requires_grad_(False)
    assert SparseEmbeddingGradients(frozen).tables == []
