"""The report decoder: a transformer that writes a report conditioned on the ECG encoder's features.

Architecture (the decoder of Vaswani et al. 2017, pre-LN as GPT-2; the captioning decoders of
ECGFM-style models)::

    memory: encoder features [B, D, T'] -> transpose -> Linear(D, W) + sinusoidal positions -> [B, T', W]
    tokens [B, N] -> token embedding + learned positions [B, N, W]
    depth x ( x + SelfAttn(LN(x), causal) ; x + CrossAttn(LN(x), memory) ; x + MLP(LN(x)) )
    LN -> Linear(W, V) -> logits [B, N, V]

The memory is the encoder's per-time-step feature map (``forward_features``), not the pooled
vector, so each word can attend to the part of the recording that supports it. Positions of the
memory are sinusoidal (any ``T'``, so any record length the encoder accepts).

Training is teacher forcing (:mod:`ecgfm.language.caption_loss`). Generation
(:meth:`ReportDecoder.generate`) is deterministic (arg-max choices; ties go to the lower token
id): greedy decoding, or beam search with a length penalty. Both start from ``<bos>``, stop a
hypothesis at ``<eos>`` and stop at ``max_length`` tokens at the latest. Beam search follows
the usual scheme (as Hugging Face ``transformers``' ``BeamSearchScorer`` with
``early_stopping=True``): at each step the ``2K`` best continuations of the ``K`` beams are
ranked by summed log-probability; those ending in ``<eos>`` among the first ``K`` become
finished hypotheses scored ``sum log p / length ** length_penalty`` (``length`` counts the
generated tokens with ``<eos>``), the best ``K`` others continue; a record is done when it has
``K`` finished hypotheses, and unfinished beams at ``max_length`` are scored the same way. With
``K = 1`` this is exactly greedy decoding.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ecgfm.errors import ValidationError
from ecgfm.language.text import BOS, EOS, PAD

__all__ = ["DecoderConfig", "ReportDecoder", "decoder_config"]


@dataclass(frozen=True)
class DecoderConfig:
    """Architecture of :class:`ReportDecoder`."""

    vocab_size: int = 2000  # tokens (the tokenizer's vocab_size)
    memory_dim: int = 512  # D, channels of the encoder's feature map (set from the encoder)
    width: int = 256  # W, model width
    depth: int = 3  # decoder blocks
    heads: int = 4  # attention heads (divide width)
    mlp_ratio: float = 4.0  # MLP hidden width / W
    max_length: int = 128  # longest token sequence, <bos> included (learned position table)
    dropout: float = 0.1  # dropout after embeddings, attention projections and MLP
    attn_dropout: float = 0.0  # dropout on attention weights

    def __post_init__(self) -> None:
        from ecgfm.language.text_encoder import _check_transformer

        _check_transformer(self, "decoder")
        if isinstance(self.memory_dim, bool) or not isinstance(self.memory_dim, int) or self.memory_dim < 1:
            raise ValidationError(f"decoder.memory_dim: expected a positive integer, got {self.memory_dim!r}")


def decoder_config(values: Mapping[str, Any] | None = None, **fixed: Any) -> DecoderConfig:
    """:class:`DecoderConfig` from a mapping of overrides (unknown keys list the valid ones)."""
    from ecgfm.language.text_encoder import _build

    return _build(DecoderConfig, {**dict(values or {}), **fixed}, "decoder")


def sinusoid(n: int, width: int, device: Any = None, dtype: Any = None) -> Tensor:
    """Sinusoidal position table ``[n, width]`` (Vaswani et al. 2017, section 3.5)."""
    pos = torch.arange(n, device=device, dtype=torch.float32)[:, None]
    i = torch.arange(0, width, 2, device=device, dtype=torch.float32)
    angle = pos / torch.pow(10000.0, i / width)  # [n, ceil(W/2)]
    table = torch.zeros(n, width, device=device)
    table[:, 0::2] = torch.sin(angle)
    table[:, 1::2] = torch.cos(angle[:, : width // 2])
    return table.to(dtype or torch.float32)


class _Attention(nn.Module):
    def __init__(self, width: int, heads: int, attn_dropout: float) -> None:
        super().__init__()
        self.heads, self.attn_dropout = heads, attn_dropout
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(width, 2 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: Tensor, context: Tensor, causal: bool) -> Tensor:
        b, n, w = x.shape
        m = context.shape[1]
        h = self.heads
        q = self.q(x).view(b, n, h, w // h).transpose(1, 2)  # [B, H, N, W/H]
        k, v = self.kv(context).view(b, m, 2, h, w // h).permute(2, 0, 3, 1, 4)  # [B, H, M, W/H] each
        out = F.scaled_dot_product_attention(q, k, v, is_causal=causal,
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        return self.proj(out.transpose(1, 2).reshape(b, n, w))  # [B, N, W]


class _DecoderBlock(nn.Module):
    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        w = cfg.width
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(w), nn.LayerNorm(w), nn.LayerNorm(w)
        self.self_attn = _Attention(w, cfg.heads, cfg.attn_dropout)
        self.cross_attn = _Attention(w, cfg.heads, cfg.attn_dropout)
        hidden = int(round(w * cfg.mlp_ratio))
        self.mlp = nn.Sequential(nn.Linear(w, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, w))
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        y = self.norm1(x)
        x = x + self.drop(self.self_attn(y, y, causal=True))  # [B, N, W]
        x = x + self.drop(self.cross_attn(self.norm2(x), memory, causal=False))  # [B, N, W]
        return x + self.drop(self.mlp(self.norm3(x)))  # [B, N, W]


class ReportDecoder(nn.Module):
    """Transformer decoder over report tokens with cross-attention to ECG features.

    Attributes:
        config: the :class:`DecoderConfig`.
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        from ecgfm.models.base import init_transformer

        self.config = config
        w = config.width
        self.memory_proj = nn.Linear(config.memory_dim, w)
        self.memory_norm = nn.LayerNorm(w)
        self.token_embed = nn.Embedding(config.vocab_size, w)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_length, w))
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(_DecoderBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(w)
        self.out = nn.Linear(w, config.vocab_size)
        init_transformer(self)
        nn.init.trunc_normal_(self.token_embed.weight, std=0.02)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)

    def memory(self, features: Tensor) -> Tensor:
        """Encoder features ``[B, D, T']`` -> the memory the decoder attends to, ``[B, T', W]``."""
        if features.ndim != 3 or features.shape[1] != self.config.memory_dim:
            raise ValidationError(f"ReportDecoder: features must be [B, {self.config.memory_dim}, T'], "
                                  f"got {tuple(features.shape)}")
        x = self.memory_proj(features.transpose(1, 2))  # [B, T', W]
        x = x + sinusoid(x.shape[1], x.shape[2], x.device, x.dtype)[None]
        return self.memory_norm(x)  # [B, T', W]

    def forward(self, tokens: Tensor, memory: Tensor) -> Tensor:
        """Logits ``[B, N, V]`` for ``tokens`` ``[B, N]`` (``<bos>`` first) given ``memory``
        ``[B, T', W]`` from :meth:`memory`; position ``t`` sees tokens ``0..t`` only."""
        n = tokens.shape[1]
        if n > self.config.max_length:
            raise ValidationError(f"ReportDecoder: {n} tokens, at most max_length={self.config.max_length}")
        x = self.drop(self.token_embed(tokens) + self.pos_embed[:, :n])  # [B, N, W]
        for block in self.blocks:
            x = block(x, memory)
        return self.out(self.norm(x))  # [B, N, V]

    # -- generation -------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, features: Tensor, *, beam: int = 1, max_length: int | None = None,
                 length_penalty: float = 1.0) -> list[list[int]]:
        """Reports for encoder features ``[B, D, T']``: one list of token ids per record (without
        ``<bos>``/``<eos>``). ``beam=1`` is greedy decoding; ``max_length`` counts ``<bos>`` and
        defaults to the decoder's. Deterministic: the module is put in eval mode for the call.

        Raises:
            ValidationError: ``beam < 1``, or ``max_length`` outside ``2..config.max_length``.
        """
        if isinstance(beam, bool) or int(beam) != beam or beam < 1:
            raise ValidationError(f"beam must be an integer >= 1, got {beam!r}")
        limit = self.config.max_length if max_length is None else int(max_length)
        if not 2 <= limit <= self.config.max_length:
            raise ValidationError(f"max_length must be in 2..{self.config.max_length}, got {max_length!r}")
        was_training = self.training
        self.eval()
        try:
            memory = self.memory(features)
            if beam == 1:
                return self._greedy(memory, limit)
            return self._beam(memory, int(beam), limit, float(length_penalty))
        finally:
            self.train(was_training)

    def _greedy(self, memory: Tensor, limit: int) -> list[list[int]]:
        b = memory.shape[0]
        seqs = torch.full((b, 1), BOS, dtype=torch.long, device=memory.device)
        done = torch.zeros(b, dtype=torch.bool, device=memory.device)
        for _ in range(limit - 1):
            logits = self(seqs, memory)[:, -1].float()  # [B, V]
            nxt = logits.argmax(dim=-1)
            nxt = torch.where(done, torch.full_like(nxt, PAD), nxt)
            seqs = torch.cat([seqs, nxt[:, None]], dim=1)
            done = done | (nxt == EOS)
            if bool(done.all()):
                break
        return [_strip(row) for row in seqs[:, 1:].tolist()]

    def _beam(self, memory: Tensor, k: int, limit: int, alpha: float) -> list[list[int]]:
        b, device = memory.shape[0], memory.device
        memory = memory.repeat_interleave(k, dim=0)  # [B*K, T', W]
        seqs = torch.full((b * k, 1), BOS, dtype=torch.long, device=device)
        scores = torch.full((b, k), float("-inf"), device=device)
        scores[:, 0] = 0.0  # the first step expands one beam (the others are copies)
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
        done = [False] * b
        for _ in range(limit - 1):
            logp = torch.log_softmax(self(seqs, memory)[:, -1].float(), dim=-1)  # [B*K, V]
            v = logp.shape[-1]
            cand = (scores[:, :, None] + logp.view(b, k, v)).view(b, k * v)  # [B, K*V]
            top, idx = cand.topk(2 * k, dim=1)  # sorted, best first
            beams, toks = idx // v, idx % v
            length = seqs.shape[1]  # generated tokens after this step, <eos> included
            next_rows, next_toks, next_scores = [], [], []
            for r in range(b):
                kept: list[tuple[int, int, float]] = []
                for rank in range(2 * k):
                    score = float(top[r, rank])
                    beam_r, tok = int(beams[r, rank]), int(toks[r, rank])
                    if done[r] or score == float("-inf"):
                        break
                    if tok == EOS:
                        if rank < k:
                            hyp = seqs[r * k + beam_r, 1:].tolist()
                            finished[r].append((score / length ** alpha, hyp))
                        continue
                    kept.append((beam_r, tok, score))
                    if len(kept) == k:
                        break
                if not done[r] and len(finished[r]) >= k:
                    done[r] = True
                while len(kept) < k:  # a done record (or too few candidates): pad with dead beams
                    kept.append((0, PAD, float("-inf")))
                for beam_r, tok, score in kept:
                    next_rows.append(r * k + beam_r)
                    next_toks.append(tok)
                    next_scores.append(score)
            if all(done):
                break
            rows = torch.tensor(next_rows, device=device)
            seqs = torch.cat([seqs[rows], torch.tensor(next_toks, device=device)[:, None]], dim=1)
            scores = torch.tensor(next_scores, device=device).view(b, k)
        out = []
        for r in range(b):
            hyps = list(finished[r])
            if not done[r]:  # max_length reached: the live beams compete as they are
                length = seqs.shape[1] - 1
                for j in range(k):
                    score = float(scores[r, j])
                    if score > float("-inf"):
                        hyps.append((score / max(length, 1) ** alpha, seqs[r * k + j, 1:].tolist()))
            best = max(hyps, key=lambda h: h[0]) if hyps else (0.0, [])
            out.append(_strip(best[1]))
        return out


def _strip(ids: list[int]) -> list[int]:
    """Ids up to (without) the first ``<eos>``, padding removed."""
    out = []
    for i in ids:
        if i == EOS:
            break
        if i != PAD:
            out.append(int(i))
    return out
