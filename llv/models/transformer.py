"""A tiny causal transformer language model (GPT-style, pre-LayerNorm) for ``dataset=text``.

Token ids ``(B, T)`` go in, next-token logits ``(B, T, vocab)`` come out; position ``t`` sees
tokens ``0..t`` only. Attention is written out (no fused kernel), so the model runs under
``torch.func.vmap`` over parameter sets and under double backward (Hessian-vector products),
as every grid point and every Hessian of llv needs. 137 k parameters at the defaults: it
learns the bundled text's bigrams and frequent words on a CPU in a minute.

>>> import torch
>>> net = TinyLM(vocab_size=256, seq_len=16)
>>> net(torch.zeros(2, 16, dtype=torch.int64)).shape
torch.Size([2, 16, 256])
"""

from __future__ import annotations

import math

import torch
from torch import nn

from llv.errors import LlvError
from llv.models._layers import ModelSpec

INIT_STD = 0.02  # GPT-2's initialisation of every weight matrix and embedding


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention in which each position attends to itself and earlier ones."""

    def __init__(self, d_model: int, num_heads: int, seq_len: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        allowed = torch.ones(seq_len, seq_len, dtype=torch.bool).tril()
        # not persistent: a constant of the architecture, not a state to save or perturb
        self.register_buffer("allowed", allowed, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        heads = self.num_heads
        q, k, v = self.qkv(x).split(width, dim=-1)
        q, k, v = (t.view(batch, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(width // heads)
        scores = scores.masked_fill(~self.allowed[:length, :length], float("-inf"))
        mixed = scores.softmax(dim=-1) @ v  # B×heads×T×(width/heads)
        return self.proj(mixed.transpose(1, 2).reshape(batch, length, width))


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attention(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, d_model: int, num_heads: int, seq_len: int, mlp_ratio: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attention = CausalSelfAttention(d_model, num_heads, seq_len)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, mlp_ratio * d_model), nn.GELU(), nn.Linear(mlp_ratio * d_model, d_model)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyLM(nn.Module):
    """Token + learned position embeddings, ``num_layers`` pre-LN blocks, final LN, output head.

    Args:
        vocab_size: number of token ids (256 for bytes).
        seq_len: longest input (the number of learned positions).
        d_model: width of the residual stream.
        num_layers: transformer blocks.
        num_heads: attention heads (must divide ``d_model``).
        mlp_ratio: hidden width of each block's MLP, in multiples of ``d_model``.
        tie_weights: the output head is the token embedding (transposed), as in GPT-2;
            otherwise (the default) a separate ``head`` linear layer without bias. At this size
            the untied head learns much faster: on the bundled text, Adam (lr 3e-3, batch 16)
            reaches a loss of 2.56 after 50 steps untied, 3.16 (the unigram plateau) tied.
    """

    def __init__(
        self,
        vocab_size: int = 256,
        seq_len: int = 64,
        d_model: int = 64,
        num_layers: int = 2,
        num_heads: int = 4,
        mlp_ratio: int = 4,
        tie_weights: bool = False,
    ):
        super().__init__()
        if min(vocab_size, seq_len, d_model, num_layers, num_heads, mlp_ratio) < 1:
            raise LlvError(
                "tiny_lm needs vocab_size, seq_len, d_model, num_layers, num_heads and mlp_ratio "
                f">= 1, got {vocab_size}, {seq_len}, {d_model}, {num_layers}, {num_heads}, {mlp_ratio}"
            )
        if d_model % num_heads:
            raise LlvError(f"tiny_lm: num_heads={num_heads} must divide d_model={d_model}")
        self.seq_len = seq_len
        self.token = nn.Embedding(vocab_size, d_model)
        self.position = nn.Embedding(seq_len, d_model)
        self.blocks = nn.ModuleList(
            Block(d_model, num_heads, seq_len, mlp_ratio) for _ in range(num_layers)
        )
        self.ln_final = nn.LayerNorm(d_model)
        self.head = None if tie_weights else nn.Linear(d_model, vocab_size, bias=False)
        self._init(num_layers)

    def _init(self, num_layers: int) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=INIT_STD)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for block in self.blocks:  # GPT-2: residual branches scaled down with depth
            for layer in (block.attention.proj, block.mlp[2]):
                nn.init.normal_(layer.weight, std=INIT_STD / math.sqrt(2 * num_layers))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.is_floating_point() or tokens.dim() != 2:
            raise LlvError(
                f"tiny_lm reads token ids (batch, seq_len) of integers, got a "
                f"{tuple(tokens.shape)} {tokens.dtype} tensor: use dataset=text"
            )
        length = tokens.shape[1]
        if length > self.seq_len:
            raise LlvError(f"tiny_lm has {self.seq_len} positions, got sequences of {length}")
        x = self.token(tokens) + self.position.weight[:length]
        for block in self.blocks:
            x = block(x)
        x = self.ln_final(x)
        weight = self.token.weight if self.head is None else self.head.weight
        return x @ weight.T


def tiny_lm(spec: ModelSpec) -> TinyLM:
    """The language model of a ``model=tiny_lm`` config (sizes from its keys, see the yaml).

    >>> net = tiny_lm(ModelSpec(options={"vocab_size": 256, "seq_len": 64}))
    >>> sum(p.numel() for p in net.parameters())
    136960
    """
    options = spec.options
    return TinyLM(
        vocab_size=int(options.get("vocab_size", 256)),
        seq_len=int(options.get("seq_len", 64)),
        d_model=int(options.get("d_model", 64)),
        num_layers=int(options.get("num_layers", 2)),
        num_heads=int(options.get("num_heads", 4)),
        mlp_ratio=int(options.get("mlp_ratio", 4)),
        tie_weights=bool(options.get("tie_weights", False)),
    )
