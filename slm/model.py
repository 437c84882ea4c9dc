"""The decoder-only transformer every node runs, with an optional sparse Mixture-of-Experts MLP.

Reads top to bottom like the architecture: token (+ learned position) embeddings -> N pre-norm
blocks (causal self-attention, MLP or MoE, residuals) -> final norm -> LM head, tied to the
token embedding or not. One class covers two families by configuration (as litgpt does): the
GPT-style presets (LayerNorm, learned positions, GELU MLP, biases) and the Llama family that
pretrained bases use (RMSNorm, rotary positions, SwiGLU MLP, grouped-query attention, no
biases). Shapes in comments: B batch, T tokens, C d_model, nh heads, nkv key/value heads, hs
head size.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from slm.config import ModelConfig

_VOCAB_SLICE = 2048  # vocabulary rows per head matmul when scoring


@dataclass
class KVCache:
    """Keys and values of every layer for the tokens seen so far, preallocated to block_size."""

    keys: list[torch.Tensor]  # per layer (B, nkv, block_size, hs)
    values: list[torch.Tensor]
    length: int = 0

    @classmethod
    def empty(cls, config: ModelConfig, batch: int, device: torch.device, dtype: torch.dtype):
        shape = (batch, config.kv_heads, config.block_size, config.head_dim)
        make = [torch.empty(shape, device=device, dtype=dtype) for _ in range(config.n_layer)]
        return cls(keys=make, values=[torch.empty_like(k) for k in make])


class RMSNorm(nn.Module):
    """x / rms(x) * weight, computed in fp32 (as Llama's reference does)."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(x.dtype)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps)


def rope_tables(config: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin (block_size, hs) of rotary positions, in the rotate-half layout."""
    half = config.head_dim // 2
    inv_freq = 1.0 / config.rope_base ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.outer(torch.arange(config.block_size, dtype=torch.float64), inv_freq)
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, h, T, hs) by its positions' angles (cos, sin: (T, hs))."""
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat([-second, first], dim=-1) * sin


class CausalSelfAttention(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv = config.n_head, config.kv_heads
        self.hs = config.head_dim
        kv = self.n_kv * self.hs
        self.qkv = nn.Linear(config.d_model, config.d_model + 2 * kv, bias=config.bias)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.dropout = config.dropout

    def forward(
        self, x: torch.Tensor, cache: KVCache | None, layer: int,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        B, T, C = x.shape
        q, k, v = self.qkv(x).split([C, self.n_kv * self.hs, self.n_kv * self.hs], dim=2)
        q = q.view(B, T, self.n_head, self.hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_kv, self.hs).transpose(1, 2)  # (B, nkv, T, hs)
        v = v.view(B, T, self.n_kv, self.hs).transpose(1, 2)
        if rope is not None:
            q, k = apply_rope(q, *rope), apply_rope(k, *rope)
        mask = None
        causal = T > 1
        if cache is not None:
            start = cache.length
            cache.keys[layer][:, :, start : start + T] = k
            cache.values[layer][:, :, start : start + T] = v
            k = cache.keys[layer][:, :, : start + T]
            v = cache.values[layer][:, :, : start + T]
            if start and T > 1:
                # New queries see every cached key and the new keys up to their own position.
                rows = torch.arange(start, start + T, device=x.device).unsqueeze(1)
                mask = torch.arange(start + T, device=x.device).unsqueeze(0) <= rows
                causal = False
        dropout = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            dropout_p=dropout,
            is_causal=causal,
            enable_gqa=self.n_kv != self.n_head,
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.proj(y)


class MLP(nn.Module):
    """GELU: proj(gelu(fc(x))); SwiGLU: fc holds gate and up, proj(silu(gate) * up)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.swiglu = config.mlp == "swiglu"
        width = 2 * config.d_ff if self.swiglu else config.d_ff
        self.fc = nn.Linear(config.d_model, width, bias=config.bias)
        self.proj = nn.Linear(config.d_ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            gate, up = self.fc(x).chunk(2, dim=-1)
            return self.proj(F.silu(gate) * up)
        return self.proj(F.gelu(self.fc(x)))  # exact GELU: 4x faster than tanh form on CPU


class SparseMoE(nn.Module):
    """A gate sends each token to its top-k experts; outputs are mixed by renormalised gate weights.

    `aux_loss` after a forward pass is the Switch-Transformer load-balancing loss
    E * sum_e(f_e * P_e): f_e the share of routed slots that went to expert e, P_e the mean gate
    probability of e. It is 1 when routing is perfectly balanced and grows as experts collapse.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.top_k = config.top_k
        self.gate = nn.Linear(config.d_model, config.n_experts, bias=False)
        self.experts = nn.ModuleList(MLP(config) for _ in range(config.n_experts))
        self.aux_loss = torch.zeros(())

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(gate probabilities (N, E), chosen experts (N, k), their renormalised weights (N, k))."""
        probs = F.softmax(self.gate(x), dim=-1, dtype=torch.promote_types(x.dtype, torch.float32))
        top_p, top_i = probs.topk(self.top_k, dim=-1)
        weights = (top_p / top_p.sum(dim=-1, keepdim=True)).to(x.dtype)
        return probs, top_i, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        flat = x.reshape(-1, C)  # (N, C)
        probs, top_i, weights = self.route(flat)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            token, slot = torch.nonzero(top_i == e, as_tuple=True)
            if token.numel():
                y = expert(flat[token]) * weights[token, slot].unsqueeze(1)
                out.index_add_(0, token, y)
        n_experts = len(self.experts)
        share = F.one_hot(top_i, n_experts).float().sum(dim=(0, 1)) / top_i.numel()
        self.aux_loss = n_experts * torch.sum(share * probs.mean(dim=0))
        return out.view(B, T, C)


class Block(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = SparseMoE(config) if config.n_experts else MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(
        self, x: torch.Tensor, cache: KVCache | None, layer: int,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:  # fmt: skip
        x = x + self.drop(self.attn(self.ln_1(x), cache, layer, rope))
        return x + self.drop(self.mlp(self.ln_2(x)))


class _NoRandomInit(TorchFunctionMode):
    """Within it, `torch.nn.init`'s fills leave a tensor as allocated. Not the meta device:
    filling a meta tensor imports torch._dynamo, 1.3 s of one core in every process that loads
    a model. A torch function mode holds for its own thread only, so a model built at the same
    time on another thread is initialised as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if getattr(func, "__module__", None) == "torch.nn.init":
            return args[0] if args else kwargs["tensor"]
        return func(*args, **(kwargs or {}))


class SLM(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.wpe = (
            nn.Embedding(config.block_size, config.d_model)
            if config.positions == "learned"
            else None
        )
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        # An untied head is its own matrix; tied, the head reads the token embedding.
        self.out_head = (
            None if config.tied_head else nn.Linear(config.d_model, config.vocab_size, bias=False)
        )
        if config.positions == "rope":
            cos, sin = rope_tables(config)
            self.register_buffer("rope_cos", cos, persistent=False)
            self.register_buffer("rope_sin", sin, persistent=False)
        # Set only by slm.serving: the tied head in a faster layout or quantised, for CPU serving,
        # and a fused one-token decode step (slm.fused) for fp32 CPU serving.
        self.lm_head: nn.Module | None = None
        self.decode_one: Callable[[int, KVCache], torch.Tensor] | None = None
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight"):  # GPT-2: scale residual projections by depth
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @classmethod
    def for_loading(cls, config: ModelConfig) -> SLM:
        """An SLM whose every weight is about to be loaded: its parameters are allocated but
        not drawn at random. Drawing them costs about 1 s of one core for the 135M base,
        paid at every node start and by every ClientApp process (one per round message)."""
        with _NoRandomInit():
            return cls(config)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Logits (B, T, vocab) for token ids (B, T); with a cache, positions continue after it."""
        return self.head(self.hidden_states(idx, cache))

    def hidden_states(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """Final-LayerNorm outputs (B, T, C): what the head turns into logits."""
        T = idx.shape[1]
        start = cache.length if cache is not None else 0
        if start + T > self.config.block_size:
            raise ValueError(
                f"sequence of {start + T} tokens exceeds block_size {self.config.block_size}"
            )
        x = self.wte(idx)  # (B, T, C)
        rope = None
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(start, start + T, device=idx.device))
        else:
            rope = (self.rope_cos[start : start + T], self.rope_sin[start : start + T])
        x = self.drop(x)
        for layer, block in enumerate(self.blocks):
            x = block(x, cache, layer, rope)
        if cache is not None:
            cache.length += T
        return self.ln_f(x)

    def target_logprobs(self, hidden: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """log p(target) at each position of final hidden states (T, C), through the tied head.

        The vocabulary is streamed in slices with an online log-sum-exp, so the (T, vocab)
        logits never exist whole: on a CPU that runs the head about 1.5x faster than
        materialising them (docs/architecture.md). Uses the fp32 head weight in every serving
        form, so int8 models score with the full-precision head.
        """
        weight = self.head_weight()
        slices = [
            torch.logsumexp(F.linear(hidden, weight[v : v + _VOCAB_SLICE]).float(), dim=-1)
            for v in range(0, weight.shape[0], _VOCAB_SLICE)
        ]
        target = (hidden * weight[targets]).sum(dim=-1).float()
        return target - torch.logsumexp(torch.stack(slices, dim=-1), dim=-1)

    def head_weight(self) -> torch.Tensor:
        """The fp32 (vocab, C) head matrix: the token embedding when tied."""
        return self.wte.weight if self.out_head is None else self.out_head.weight

    def head(self, x: torch.Tensor) -> torch.Tensor:
        if self.lm_head is not None:
            return self.lm_head(x)
        return F.linear(x, self.head_weight())

    def aux_loss(self) -> torch.Tensor:
        """Sum of the MoE load-balancing losses of the last forward pass (0 for a dense model)."""
        losses = [b.mlp.aux_loss for b in self.blocks if isinstance(b.mlp, SparseMoE)]
        return torch.stack(losses).sum() if losses else torch.zeros(())

    def loss(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean next-token cross-entropy, plus the weighted MoE auxiliary loss in training."""
        logits = self(idx)
        loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1))
        if self.training and self.config.n_experts:
            loss = loss + self.config.aux_loss_weight * self.aux_loss()
        return loss

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
