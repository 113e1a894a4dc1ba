"""Convert the trained demo model into the package and write its model card.

    python tools/package_demo_model.py /work/demo_train [--out edgemoe/models]

Reads TRAIN_DIR/final (the Hugging Face checkpoint, training_info.json and
report.json written by tools/train_demo_model.py), TRAIN_DIR/train_log.csv and
TRAIN_DIR/corpus/heldout.jsonl; writes OUT/demo.emoe (8-bit experts), the
plots and OUT/MODEL_CARD.md. Perplexity and samples in the card are computed
by this engine on the converted container, next to transformers' figures from
the training report.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
import edgemoe  # noqa: E402
from edgemoe.convert import convert_hf  # noqa: E402
from edgemoe.offline.perplexity import perplexity, read_text  # noqa: E402
from edgemoe.offline.profile import profile_container  # noqa: E402

PROFILE_TOKENS = 200_000  # of the training split, for the shipped routing profile
PROMPTS = ["It was a fine morning, and Elizabeth", "And the LORD said unto Moses,", "MARRIAGE, n."]


def heldout_perplexity(model, path: str, window: int = 256):
    """Perplexity of the held-out split in back-to-back windows (edgemoe perplexity, stride window - 1)."""
    r = perplexity(model, model.tokenize(read_text(path), add_special_tokens=False), window, window - 1)
    return r["perplexity"], r["tokens"]


def write_parity_reference(final: str, model, heldout: str, out_npz: str, windows: int = 4, window: int = 256):
    """transformers' argmax on held-out windows, for the 8-bit parity test (tests/test_parity.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    with open(heldout, encoding="utf-8") as f:
        text = "\n\n".join(json.loads(line)["text"] for line in f if line.strip())
    ids = np.array(model.tokenize(text, add_special_tokens=False)[: windows * window]).reshape(windows, window)
    hf = AutoModelForCausalLM.from_pretrained(final, dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        argmax = np.array([hf(torch.tensor(w)[None]).logits[0].numpy().argmax(-1) for w in ids], dtype=np.int32)
    np.savez_compressed(out_npz, windows=ids.astype(np.int32), argmax=argmax)


def plot_loss(log_csv: str, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, lm, held_steps, held = [], [], [], []
    with open(log_csv) as f:
        for row in csv.DictReader(f):
            steps.append(int(row["step"]))
            lm.append(float(row["lm_loss"]))
            if row.get("heldout_loss"):
                held_steps.append(int(row["step"]))
                held.append(float(row["heldout_loss"]))
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, lm, label="train (LM loss)", lw=1)
    if held:
        ax.plot(held_steps, held, "o-", label="held-out", ms=3)
    ax.set_xlabel("step (4096 tokens each)")
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def plot_load(report: dict, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    load = np.array([layer["load_topk"] for layer in report["routing"]["per_layer"]])
    fig, ax = plt.subplots(figsize=(6, 3.5))
    im = ax.imshow(load, aspect="auto", cmap="viridis")
    ax.set_xlabel("expert")
    ax.set_ylabel("layer")
    ax.set_title("share of top-2 routing slots per expert (held-out text)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_dir")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "edgemoe", "models"))
    p.add_argument("--bits", default="8")
    a = p.parse_args()
    final = os.path.join(a.train_dir, "final")
    os.makedirs(a.out, exist_ok=True)
    emoe = os.path.join(a.out, "demo.emoe")
    convert_hf(final, emoe, bits=a.bits, progress=False)
    # Shipped profiled, so --predictor stats|token|auto work on it out of the box: routing
    # statistics of the training split (prefetch guesses only; nothing the model computes).
    profile_container(emoe, read_text(os.path.join(a.train_dir, "corpus", "train.jsonl")), max_tokens=PROFILE_TOKENS,
                      source="train.jsonl")
    info = json.load(open(os.path.join(final, "training_info.json")))
    report = json.load(open(os.path.join(final, "report.json")))
    plot_loss(os.path.join(a.train_dir, "train_log.csv"), os.path.join(a.out, "loss_curve.png"))
    plot_load(report, os.path.join(a.out, "expert_load.png"))

    model = edgemoe.load(emoe, threads=2)
    write_parity_reference(final, model, os.path.join(a.train_dir, "corpus", "heldout.jsonl"),
                           os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "demo_reference.npz"))
    t0 = time.perf_counter()
    ppl, scored = heldout_perplexity(model, os.path.join(a.train_dir, "corpus", "heldout.jsonl"))
    ppl_s = time.perf_counter() - t0
    samples = [(prompt, model.generate(prompt, max_tokens=60, temperature=0.6, top_p=0.9, seed=i,
                                       repeat_penalty=1.1))
               for i, prompt in enumerate(PROMPTS)]
    m_info = model.info()
    routing = report["routing"]
    pred = report["next_layer_prediction"]
    hp = info["hyperparameters"]
    corpus = info["corpus"]
    lines = [
        "# EdgeMoE demo model",
        "",
        "A small Mixture-of-Experts language model trained from scratch, shipped so that `edgemoe chat`",
        "works straight after install with no download. It writes recognisable (if often muddled)",
        "English in the style of its corpus; it is not an assistant and knows nothing of the world.",
        "",
        "## Model",
        "",
        f"- Architecture: Qwen3-MoE (`Qwen3MoeForCausalLM`), {hp['layers']} layers, hidden {hp['hidden']}, "
        f"{hp['heads']} heads of {hp['head_dim']} ({hp['kv_heads']} KV heads), {hp['experts']} routed experts per "
        f"layer of width {hp['moe_intermediate']}, top-{hp['top_k']} routing, tied embeddings, "
        f"vocabulary {hp['vocab']} (byte-level BPE trained on the corpus), context {hp['max_position']}.",
        f"- Parameters: {m_info['params_total'] / 1e6:.1f} M in total, {m_info['params_active'] / 1e6:.1f} M "
        f"active per token.",
        f"- Shipped as `demo.emoe`: {os.path.getsize(emoe) / 1e6:.1f} MB, experts {m_info['quantization']['experts']}, "
        f"resident weights {m_info['quantization']['resident']} (`edgemoe convert --bits {a.bits}`).",
        f"- Routing profile inside (`edgemoe profile` on {PROFILE_TOKENS:,} tokens of the training split), so "
        f"`--predictor stats|token|auto` work as shipped.",
        "",
        "## Training",
        "",
        f"- Command: `{info['command']}` (seed {hp['seed']}, float32, {hp['threads']} CPU threads).",
        f"- {hp['steps']} steps of {info['tokens_per_step']} tokens (sequences of {hp['seq_len']}), AdamW, peak "
        f"learning rate {hp['lr']}, {hp['warmup']} warm-up steps then cosine decay; load-balancing loss "
        f"coefficient {hp['aux_coef']}.",
        "- Corpus (public domain, taken offline from Debian packages; built by `tools/demo_corpus.py`):",
    ]
    for name, src in corpus["sources"].items():
        pkgs = ", ".join(f"{k} {v}" for k, v in src["packages"].items())
        lines.append(f"  - {name}: {src['characters']['train'] / 1e6:.2f} M characters ({pkgs}). {src['licence']}")
    lines += [
        f"  - Held-out split: {corpus['heldout_rule']} ({corpus['heldout_characters']} characters).",
        "",
        "![training loss](loss_curve.png)",
        "",
        "## Evaluation (held-out split)",
        "",
        f"- Perplexity, this engine on `demo.emoe`: **{ppl:.1f}** ({scored} tokens scored, windows of 256 tokens "
        f"from an empty context; {ppl_s:.0f} s).",
        f"- Perplexity, transformers on the f32 checkpoint (training report): {report['heldout']['perplexity']:.1f}.",
        "",
        "## Routing",
        "",
        "Routing is far from uniform, which is what makes expert caching and prediction pay off:",
        "",
        "- Expert-usage entropy, normalised to 1 for uniform use, per layer: "
        + ", ".join(f"{l['load_entropy_normalized']:.2f}" for l in routing["per_layer"])
        + f" (mean {routing['mean_load_entropy_normalized']:.2f}).",
        f"- Layer l+1's top-1 expert predicted from layer l's top-1 expert by a co-occurrence table: "
        f"{pred['mean_top1_accuracy']:.1%} correct on average, against {pred['mean_top1_frequency_baseline']:.1%} "
        f"for always guessing the most frequent expert ({pred['method']}).",
        "",
        "| transition | top-1 accuracy | frequency baseline | top-2 recall | baseline |",
        "|---|---|---|---|---|",
    ]
    for t in pred["per_transition"]:
        lines.append(f"| {t['from_layer']}→{t['to_layer']} | {t['top1_accuracy']:.1%} | "
                     f"{t['top1_frequency_baseline']:.1%} | {t['top2_recall']:.1%} | {t['top2_frequency_baseline']:.1%} |")
    lines += ["", "![expert load per layer](expert_load.png)", "",
              "## Samples (this engine; temperature 0.6, top-p 0.9, repeat penalty 1.1, seeds 0-2)", ""]
    for prompt, text in samples:
        lines += [f"> **{prompt}**{text}", ""]
    lines += ["Regenerate this card: `python tools/package_demo_model.py TRAIN_DIR` after "
              "`python tools/train_demo_model.py --out TRAIN_DIR`.", ""]
    with open(os.path.join(a.out, "MODEL_CARD.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))
    print(f"wrote {emoe} and {os.path.join(a.out, 'MODEL_CARD.md')}; held-out perplexity {ppl:.1f}")


if __name__ == "__main__":
    main()
