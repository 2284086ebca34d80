"""A small GPT: the language model of the zoo (``--model gpt``).

Token ids ``(B, T)`` in; causal self-attention (torch's ``scaled_dot_product_attention`` with
``is_causal=True``), pre-LayerNorm blocks, 4 layers of 128 dimensions and 4 heads by default,
the context ``T`` taken from the data (``input_shape = (T,)``) and the vocabulary from the
number of classes (the label of a window is its next token).

The module names are the trackable layers: ``embed`` (token + position embeddings: the residual
stream before the first block), ``blocks.0`` ... ``blocks.3`` (the residual stream after each
block), ``ln_f`` and ``head``.

What ``forward`` returns depends on the mode, so that one model serves both sides:

* **training** (``model.train()``): logits at every position, ``(B, T, vocab)``; the training
  loop then takes the next-token loss at all positions (:func:`phasescope.run.training.train`);
* **eval** (measurement works on a frozen copy in eval mode): logits of the next token after
  the last position only, ``(B, vocab)``, so that the tracker's accuracy, loss and per-sample
  dynamics see an ordinary classifier whose class is the next token.

``forward(idx, all_positions=True)`` forces the first in either mode.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ModelError


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=2)
        q, k, v = (z.view(b, t, self.heads, d // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = CausalSelfAttention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class Embedding(nn.Module):
    """Token plus learned position embeddings."""

    def __init__(self, vocab: int, context: int, dim: int):
        super().__init__()
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.pos.num_embeddings:
            raise ModelError(f"the GPT's context is {self.pos.num_embeddings} tokens; got windows of {t}.")
        return self.tok(idx) + self.pos(torch.arange(t, device=idx.device))


class GPT(nn.Module):
    """Decoder-only transformer over token ids (see the module docstring)."""

    def __init__(self, vocab: int, context: int = 64, dim: int = 128, layers: int = 4, heads: int = 4):
        super().__init__()
        if dim % heads:
            raise ModelError(f"the GPT's width {dim} must be a multiple of its {heads} heads.")
        self.vocab, self.context = vocab, context
        self.embed = Embedding(vocab, context, dim)
        self.blocks = nn.ModuleList(Block(dim, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.apply(self._init)
        for name, p in self.named_parameters():  # residual projections scaled by depth (GPT-2)
            if name.endswith("attn.proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * layers))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
        if isinstance(m, nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)

    def forward(self, idx: torch.Tensor, all_positions: bool | None = None) -> torch.Tensor:
        if idx.dtype.is_floating_point:
            raise ModelError(f"the GPT takes token ids (an integer tensor); got {idx.dtype}.")
        h = self.embed(idx.long())
        for block in self.blocks:
            h = block(h)
        h = self.ln_f(h)
        if self.training if all_positions is None else all_positions:
            return self.head(h)  # (B, T, vocab)
        return self.head(h[:, -1])  # (B, vocab): the next token after the window


def gpt(input_shape: tuple[int, ...], num_classes: int, width: float = 1.0, layers: int = 4,
        heads: int = 4) -> GPT:
    """The zoo's GPT for windows of ``input_shape = (context,)`` token ids over a vocabulary of
    ``num_classes`` tokens: 4 layers, ``128 * width`` dimensions, 4 heads."""
    if len(input_shape) != 1:
        raise ModelError(f"gpt needs token inputs: windows of token ids, input shape (context,); got {input_shape}. "
                         "Use a text dataset (--dataset shakespeare, or --dataset text --data-dir FILE).")
    dim = max(heads, int(round(128 * width / heads)) * heads)
    return GPT(num_classes, context=int(input_shape[0]), dim=dim, layers=layers, heads=heads)
