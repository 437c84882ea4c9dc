"""Batch-1 decode of the embedded base (fp32 and int8) against llama.cpp on the same weights, on
this machine, in one run; prompt scoring against Hugging Face `transformers`.

llama.cpp runs through llama-cpp-python in the benchmark's own environment (its build takes
minutes, too slow for `make install`):

    python3 -m venv build/llamacpp-venv && build/llamacpp-venv/bin/pip install llama-cpp-python
    .venv/bin/python bench/base_decode_bench.py [--rounds N] [--no-write]

The shipped GGUF is Q4_1; for comparable precision the benchmark writes the same dequantised
weights as an F32 GGUF (against our fp32) and as Q8_0 (8-bit blocks of 32 with one scale,
against our int8 with one scale per row). The limit is this machine's read bandwidth over the
bytes of weights each token reads.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.report import publish  # noqa: E402
from bench.slm_bench import machine_limits  # noqa: E402
from harness.machine import machine  # noqa: E402
from protos.wire import SamplingParams  # noqa: E402
from slm import pretrained  # noqa: E402
from slm.config import DEFAULT_BASE  # noqa: E402
from slm.generate import generate_ids  # noqa: E402
from slm.model import SLM  # noqa: E402
from slm.scoring import token_logprobs  # noqa: E402
from slm.serving import for_serving  # noqa: E402

WORK = ROOT / "build" / "bench" / "gguf"
LLAMA_PY = ROOT / "build" / "llamacpp-venv" / "bin" / "python"
PROMPT, DECODE_TOKENS, SCORE_TOKENS = "Explain what otitis media is.", 64, 512
THREADS = torch.get_num_threads()

# Runs in llama-cpp-python's environment: greedy decode, tokens/s of the decode phase alone
# (llama.cpp's own timings, which leave out prompt processing).
_LLAMA_SCRIPT = """
import json, sys
from llama_cpp import Llama
path, threads, n, rounds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
llm = Llama(model_path=path, n_ctx=512, n_threads=threads, n_batch=512, verbose=False)
prompt = llm.tokenize(b"Explain what otitis media is.")
out = []
for _ in range(rounds + 1):
    llm.reset()
    llm.eval(prompt)
    import time
    t = time.perf_counter()
    for _ in range(n):
        tok = llm.sample(temp=0.0)
        llm.eval([tok])
    out.append(n / (time.perf_counter() - t))
print(json.dumps(out[1:]))
"""


def write_variants(source: Path) -> dict[str, Path]:
    """The embedded GGUF's weights as F32 and as Q8_0 GGUF files (made once)."""
    import gguf

    WORK.mkdir(parents=True, exist_ok=True)
    out = {"F32": WORK / "smollm2-f32.gguf", "Q8_0": WORK / "smollm2-q8_0.gguf"}
    reader = gguf.GGUFReader(source)
    for kind, path in out.items():
        if path.exists():
            continue
        qtype = gguf.GGMLQuantizationType[kind]
        writer = gguf.GGUFWriter(str(path) + ".tmp", arch="llama")
        for field in reader.fields.values():
            if field.name.startswith("GGUF.") or field.name == "general.architecture":
                continue
            vtype = field.types[0]
            sub = field.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            value = field.contents()
            if field.name == "general.file_type":
                value = 0 if kind == "F32" else 7  # LLAMA_FTYPE_ALL_F32 / MOSTLY_Q8_0
            writer.add_key_value(field.name, value, vtype, sub_type=sub)
        for t in reader.tensors:
            data = np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float32)
            if data.ndim == 2 and kind == "Q8_0":
                writer.add_tensor(t.name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
            else:
                writer.add_tensor(t.name, data)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        Path(str(path) + ".tmp").rename(path)
    return out


def llama_cpp(path: Path, rounds: int) -> float:
    done = subprocess.run(
        [str(LLAMA_PY), "-c", _LLAMA_SCRIPT, str(path), str(THREADS), str(DECODE_TOKENS),
         str(rounds)], capture_output=True, text=True, check=True, timeout=900,
    )  # fmt: skip
    return statistics.median(json.loads(done.stdout.strip().splitlines()[-1]))


def ours(model: SLM, ids: list[int], rounds: int) -> float:
    params = SamplingParams(max_tokens=DECODE_TOKENS + 1, temperature=0)
    rates = []
    for _ in range(rounds + 1):
        stream = generate_ids(model, ids, params)
        next(stream)  # the prompt's prefill and the first token
        started = time.perf_counter()
        n = sum(1 for _ in stream)
        rates.append(n / (time.perf_counter() - started))
    return statistics.median(rates[1:])


def scoring(base: pretrained.Pretrained, rounds: int) -> tuple[float, float]:
    from transformers import AutoModelForCausalLM

    path = pretrained.embedded_path(DEFAULT_BASE)
    hf = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name,
                                              dtype=torch.float32).eval()  # fmt: skip
    model = SLM(base.config)
    model.load_state_dict(base.state)
    model.eval()
    ids = torch.randint(100, base.config.vocab_size, (SCORE_TOKENS,)).tolist()
    x = torch.tensor([[0, *ids]])
    a, b = [], []
    for _ in range(rounds):
        t = time.perf_counter()
        token_logprobs(model, ids, 0)
        a.append(SCORE_TOKENS / (time.perf_counter() - t))
        t = time.perf_counter()
        with torch.inference_mode():
            torch.log_softmax(hf(x).logits[0, :-1].float(), -1).gather(1, x[0, 1:].unsqueeze(1))
        b.append(SCORE_TOKENS / (time.perf_counter() - t))
    return statistics.median(a), statistics.median(b)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    base = pretrained.load(DEFAULT_BASE)
    variants = write_variants(base.source)
    limits = machine_limits()
    ids = base.tokenizer.prompt_ids(PROMPT)
    fp32_bytes = 4 * (base.config.num_parameters() - base.config.vocab_size * base.config.d_model)
    fp32_bytes += 4 * base.config.vocab_size * base.config.d_model  # the head reads the whole table
    int8_bytes = fp32_bytes / 4
    rows = []
    for precision, kind, weight_bytes in (
        ("fp32", "F32", fp32_bytes),
        ("int8", "Q8_0", int8_bytes),
    ):
        model = SLM(base.config)
        model.load_state_dict(base.state)
        served = for_serving(model.eval(), precision)
        mine = ours(served, ids, args.rounds)
        theirs = llama_cpp(variants[kind], args.rounds)
        limit = limits["bandwidth"] / weight_bytes
        rows.append((precision, kind, mine, theirs, limit))
        print(f"{precision}: ours {mine:.1f} tok/s, llama.cpp {kind} {theirs:.1f}", flush=True)
        del served, model
    q41 = llama_cpp(base.source, args.rounds)
    score_ours, score_hf = scoring(base, args.rounds)
    lines = [
        f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {machine()}, "
        f"torch {torch.__version__}, {THREADS} threads. Command: `bench/base_decode_bench.py "
        f"--rounds {args.rounds}` (median of the rounds after one warm-up). Model: the embedded "
        f"SmolLM2-135M-Instruct ({base.config.num_parameters():,} parameters); greedy decode of "
        f"{DECODE_TOKENS} tokens after the chat-wrapped prompt {PROMPT!r}, decode phase only. "
        f"Peer: llama.cpp (llama-cpp-python, built here with its default CPU flags) on GGUF files "
        f"holding the same weights. Read bandwidth measured in the same run: "
        f"**{limits['bandwidth'] / 1e9:.1f} GB/s**; the limit is bandwidth / weight bytes per "
        "token (the tied head reads the whole embedding).",
        "",
        "| decode, batch 1 | SwarmLLM tokens/s | llama.cpp tokens/s | ratio | limit | share of "
        "limit | target | met |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for precision, kind, mine, theirs, limit in rows:
        ratio = mine / theirs
        lines.append(
            f"| {precision} (llama.cpp {kind}) | **{mine:.1f}** | {theirs:.1f} | {ratio:.2f}x | "
            f"{limit:.1f} | {mine / limit:.0%} | ≥ 0.8x | {'yes' if ratio >= 0.8 else 'no'} |"
        )
    lines += [
        f"| (llama.cpp on the shipped Q4_1, for reference) | — | {q41:.1f} | | | | | |",
        "",
        f"| prompt scoring ({SCORE_TOKENS} tokens), tokens/s | SwarmLLM | transformers | ratio |",
        "|---|---:|---:|---:|",
        f"| fp32 | **{score_ours:.0f}** | {score_hf:.0f} | {score_ours / score_hf:.2f}x |",
    ]
    publish("base-decode", "Serving the pretrained base on this CPU (issue 17)", "\n".join(lines),
            write=not args.no_write)  # fmt: skip


if __name__ == "__main__":
    main()
