"""Low-rank adapters (LoRA, Hu et al. 2021) on a frozen base: a domain's weights are the base
plus scale * B @ A on every linear layer of every block.

A small module rather than `peft`: peft wraps a Hugging Face model and pulls in transformers
and accelerate at run time, while this model is our own nn.Module; the forty lines below keep
the state-dict names of the base (an adapter's tensors are `<layer>.lora_a`/`.lora_b`), and
`merge` folds the adapter into the weights at load time, so serving, quantisation and the fused
decode step see a plain model and pay nothing for it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from slm.config import AdapterConfig
from slm.errors import ConfigError


class LoRALinear(nn.Linear):
    """A frozen Linear plus a trainable low-rank update; B starts at zero, so at step 0 the
    adapted model is exactly the base."""

    def __init__(self, base: nn.Linear, rank: int, alpha: float) -> None:
        # Built on the meta device: the base's own tensors replace its weight and bias at once.
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None,
                         device="meta")  # fmt: skip
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad_(False)
        if self.bias is not None:
            self.bias.requires_grad_(False)
        self.scale = alpha / rank
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, base.in_features, **like))
        self.lora_b = nn.Parameter(torch.zeros(base.out_features, rank, **like))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias) + self.scale * F.linear(
            F.linear(x, self.lora_a), self.lora_b
        )

    def merged(self) -> nn.Linear:
        out = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None,
                        device=self.weight.device, dtype=self.weight.dtype)  # fmt: skip
        with torch.no_grad():
            out.weight.copy_(self.weight + self.scale * (self.lora_b @ self.lora_a))
            if self.bias is not None:
                out.bias.copy_(self.bias)
        return out


def _targets(model: nn.Module, cfg: AdapterConfig) -> list[tuple[nn.Module, str, nn.Linear]]:
    found = []
    for name, module in model.named_modules():
        for child_name, child in module.named_children():
            full = f"{name}.{child_name}" if name else child_name
            if isinstance(child, nn.Linear) and any(
                full == t or full.endswith("." + t) for t in cfg.targets
            ):
                found.append((module, child_name, child))
    return found


def add_adapters(model: nn.Module, cfg: AdapterConfig) -> nn.Module:
    """Freeze every weight of `model` and wrap its target layers in LoRALinear, in place."""
    for p in model.parameters():
        p.requires_grad_(False)
    targets = _targets(model, cfg)
    if not targets:
        raise ConfigError(f"no layer of the model matches adapter targets {cfg.targets}")
    for parent, name, child in targets:
        if not isinstance(child, LoRALinear):
            setattr(parent, name, LoRALinear(child, cfg.rank, cfg.alpha))
    return model


def adapter_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the adapter's tensors: what an adapted model folder stores."""
    return {
        k: v.detach().cpu().contiguous()
        for k, v in model.state_dict().items()
        if k.endswith((".lora_a", ".lora_b"))
    }


def load_adapter(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load adapter tensors into a model with adapters; every tensor must match a layer."""
    expected = set(adapter_state(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise ConfigError(
            f"adapter does not match the model: missing {missing[:3]}, unexpected {extra[:3]}"
        )
    model.load_state_dict(state, strict=False)


def merge(model: nn.Module) -> nn.Module:
    """Fold every adapter into its layer's weight, in place: a plain model again."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, LoRALinear):
                setattr(module, name, child.merged())
    return model


def has_adapters(model: nn.Module) -> bool:
    return any(isinstance(m, LoRALinear) for m in model.modules())
