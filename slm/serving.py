"""Turn a trained model into its fastest CPU serving form: fp32 in decode layout, or int8.

Decoding at batch 1 reads every weight once per token, so it is bound by memory bandwidth, and
how fast the BLAS streams a weight matrix matters more than FLOPs. On this project's reference
CPU (AMD EPYC, AVX2, MKL), a matrix-vector product streams about 1.3-1.7x faster with the
weight stored (in, out) than in PyTorch's (out, in) Linear layout (docs/benchmarks.md), so the
fp32 serving form stores every Linear, and a copy of the tied head, transposed. int8 dynamic
quantisation cuts the bytes read per token by four. Where the fused C++ decode step
(slm.fused) builds, fp32 serving uses it for every one-token step instead, and keeps the
standard layout for prefill and scoring.
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
from torch import nn

from slm import fused
from slm.model import SLM

Precision = Literal["fp32", "int8"]


class DecodeLinear(nn.Module):
    """An inference-only Linear whose weight is stored (in, out) for fast GEMV."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight_t", weight.detach().t().contiguous())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        y = (
            flat @ self.weight_t
            if self.bias is None
            else torch.addmm(self.bias, flat, self.weight_t)
        )
        return y.view(*x.shape[:-1], y.shape[-1])


def _tied_head(model: SLM) -> nn.Linear:
    head = nn.Linear(model.config.d_model, model.config.vocab_size, bias=False)
    head.weight = nn.Parameter(
        model.head_weight(), requires_grad=False
    )  # shared: quantisation makes its own int8 copy
    return head


def to_decode_layout(model: SLM) -> SLM:
    """Replace every Linear (and the tied head) by a DecodeLinear, in place."""
    model.eval()
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear) and child is not model.out_head:
                setattr(module, name, DecodeLinear(child.weight, child.bias))
    model.lm_head = DecodeLinear(model.head_weight(), None)
    return model


def quantize_int8(model: SLM) -> SLM:
    """Dynamic int8 quantisation of every Linear and of a copy of the tied head (CPU only).

    The float embedding stays for the input lookup, which reads one row per token.
    """
    model.eval()
    # The fused one-token step keeps its own int8 copy (taken from the fp32 weights, so
    # before quantize_dynamic replaces them); prefill and scoring use PyTorch's int8 layers.
    decoder = (
        fused.FusedDecoder(model, int8=True)
        if fused.available() and fused.supports(model)
        else None
    )
    model.lm_head = _tied_head(model)
    with warnings.catch_warnings():  # torch marks its eager quantisation API as deprecated
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        # An untied head stays fp32 (scoring reads it through head_weight()); lm_head is the
        # int8 copy that decoding uses.
        untied, model.out_head = model.out_head, None
        model = quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8, inplace=True)
        model.out_head = untied
    model.decode_one = decoder
    return model


def for_serving(model: SLM, precision: Precision) -> SLM:
    """int8; or fp32 with the fused C++ decode step where it builds; else the decode layout."""
    if precision == "int8":
        return quantize_int8(model)
    model.eval()
    if fused.available() and fused.supports(model):
        model.decode_one = fused.FusedDecoder(model)
        return model
    if model.wte.weight.device.type == "cpu":
        return to_decode_layout(model)
    return model
