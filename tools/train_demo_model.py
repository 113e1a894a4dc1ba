"""Train the small demo Mixture-of-Experts LM that ships with EdgeMoE (offline, CPU, reproducible).

The corpus is public-domain English from Debian packages (see tools/demo_corpus.py:
Jane Austen's novels, the King James Bible, Bierce's Devil's Dictionary). A byte-level
BPE is trained on the training split, then a transformers Qwen3MoeForCausalLM is
trained from scratch with top-2 routing over 16 experts per layer and the router
load-balancing loss. The result is an ordinary Hugging Face folder that
`python -m edgemoe convert` takes.

  python tools/train_demo_model.py --out /work/demo_train [--steps N] [--threads 2]
  python tools/train_demo_model.py --out /work/demo_train --bench 30    # throughput only
  python tools/train_demo_model.py --out /work/demo_train --report /work/demo_train/checkpoint-500

Outputs under --out: corpus/ (train/heldout jsonl + corpus_info.json), tokenizer/,
train_log.csv (step, lr, losses, held-out loss, throughput), checkpoint-N/ every
--save-every steps (the latest also keeps optimizer state for --resume) and final/
(model, tokenizer, generation_config, training_info.json, report.json).

Determinism: one seed drives initialisation and batch sampling; the corpus and the
tokenizer are rebuilt from the installed packages and their hashes recorded. Results
are bit-identical for the same --threads on the same machine/library versions.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import json
import math
import os
import platform
import random
import shutil
import sys
import time
from typing import Dict, List, Optional, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import demo_corpus  # noqa: E402

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SAMPLE_PROMPTS = [
    "It was a fine morning, and Elizabeth",
    "And the LORD said unto Moses,",
    "MARRIAGE, n.",
]


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (corpus, tokenizer, logs, checkpoints, final)")
    ap.add_argument("--steps", type=int, default=2500,
                    help="optimizer steps (2500 x 4096 tokens ~ 76 min at the ~2250 tokens/s measured on 2 cores)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=1234)
    # data
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=16, help="sequences per step")
    ap.add_argument("--vocab", type=int, default=8192)
    # model
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=8)
    ap.add_argument("--experts", type=int, default=16)
    ap.add_argument("--top-k", type=int, default=2)
    ap.add_argument("--moe-intermediate", type=int, default=256)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--max-position", type=int, default=512, help="max_position_embeddings written to config.json")
    ap.add_argument("--aux-coef", type=float, default=0.01, help="router_aux_loss_coef")
    ap.add_argument("--experts-impl", default="auto", help="eager | batched_mm | grouped_mm | auto (fastest measured)")
    # optimisation
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=150)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    # bookkeeping
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--eval-every", type=int, default=250)
    ap.add_argument("--eval-windows", type=int, default=64, help="held-out windows in periodic evals (report uses all)")
    ap.add_argument("--save-every", type=int, default=250)
    ap.add_argument("--keep-checkpoints", type=int, default=3)
    ap.add_argument("--resume", action="store_true", help="continue from the latest checkpoint-N with optimizer state")
    ap.add_argument("--bench", type=int, default=0, metavar="STEPS",
                    help="only measure training throughput of each experts implementation for STEPS steps")
    ap.add_argument("--bench-impls", default="eager,grouped_mm,batched_mm",
                    help="comma-separated experts implementations to measure (each in its own process)")
    ap.add_argument("--report", metavar="CKPT", help="only write CKPT/report.json (routing statistics, perplexity, samples)")
    ap.add_argument("--report-train-windows", type=int, default=256, help="training windows used to fit the co-occurrence table")
    ap.add_argument("--no-report", action="store_true", help="skip the report at the end of training")
    return ap.parse_args(argv)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------ corpus + tokenizer

def prepare_corpus(out: str) -> Dict:
    corpus_dir = os.path.join(out, "corpus")
    info = demo_corpus.build(corpus_dir)
    return info


def train_tokenizer(out: str, train_docs: List[Dict], vocab: int):
    """Byte-level BPE trained on the training split; special tokens take ids 0, 1, 2."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab, min_frequency=2, special_tokens=SPECIAL_TOKENS, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator((d["text"] for d in train_docs), trainer=trainer, length=len(train_docs))
    tok_dir = os.path.join(out, "tokenizer")
    os.makedirs(tok_dir, exist_ok=True)
    hf_tok = wrap_tokenizer(tok)
    save_tokenizer(hf_tok, tok_dir)
    return hf_tok


def wrap_tokenizer(tok):
    from transformers import PreTrainedTokenizerFast

    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>", unk_token=None,
        additional_special_tokens=["<|im_start|>", "<|im_end|>"], model_max_length=1 << 20,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    return hf_tok


def save_tokenizer(hf_tok, folder: str) -> None:
    """save_pretrained, with the chat template kept inside tokenizer_config.json."""
    hf_tok.save_pretrained(folder)
    cfg_path = os.path.join(folder, "tokenizer_config.json")
    with open(cfg_path, encoding="utf-8") as f:
        cfg = json.load(f)
    cfg["chat_template"] = CHAT_TEMPLATE
    cfg.setdefault("eos_token", "<|endoftext|>")
    cfg.setdefault("pad_token", "<|endoftext|>")
    cfg["add_bos_token"] = False
    with open(cfg_path, "w", encoding="utf-8") as f:
        json.dump(cfg, f, indent=2, ensure_ascii=False)
    jinja = os.path.join(folder, "chat_template.jinja")
    if os.path.exists(jinja):
        os.remove(jinja)


def load_tokenizer(folder: str):
    from tokenizers import Tokenizer

    return wrap_tokenizer(Tokenizer.from_file(os.path.join(folder, "tokenizer.json")))


def encode_docs(hf_tok, docs: List[Dict]) -> np.ndarray:
    """Documents joined into one stream, each followed by <|endoftext|>."""
    eot = hf_tok.convert_tokens_to_ids("<|endoftext|>")
    encs = hf_tok.backend_tokenizer.encode_batch([d["text"] for d in docs], add_special_tokens=False)
    ids: List[int] = []
    for e in encs:
        ids.extend(e.ids)
        ids.append(eot)
    return np.asarray(ids, dtype=np.int32)


def load_streams(out: str, hf_tok) -> Tuple[np.ndarray, np.ndarray]:
    corpus_dir = os.path.join(out, "corpus")
    train = encode_docs(hf_tok, demo_corpus.load(corpus_dir, "train"))
    heldout = encode_docs(hf_tok, demo_corpus.load(corpus_dir, "heldout"))
    return train, heldout


def eval_windows(stream: np.ndarray, seq_len: int, limit: Optional[int] = None) -> torch.Tensor:
    """Non-overlapping windows of seq_len tokens (the labels are the windows themselves, shifted inside the model)."""
    n = (len(stream)) // seq_len
    wins = torch.from_numpy(stream[: n * seq_len].astype(np.int64)).view(n, seq_len)
    if limit is not None and limit < n:
        idx = torch.linspace(0, n - 1, limit).round().long()  # spread over the whole split
        wins = wins[idx]
    return wins


# ------------------------------------------------------------------ model

def model_config(args, vocab_size: int, eot: int, im_end: int):
    from transformers import Qwen3MoeConfig

    for name in ("hidden", "moe_intermediate"):
        assert getattr(args, name) % 32 == 0, f"--{name} must be a multiple of 32"
    assert (args.heads * args.head_dim) % 32 == 0 and (args.kv_heads * args.head_dim) % 32 == 0
    return Qwen3MoeConfig(
        vocab_size=vocab_size,
        hidden_size=args.hidden,
        intermediate_size=args.moe_intermediate * args.top_k,  # unused: every layer is sparse
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        head_dim=args.head_dim,
        hidden_act="silu",
        max_position_embeddings=args.max_position,
        initializer_range=0.02,
        rms_norm_eps=1e-6,
        use_cache=True,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        attention_bias=False,
        use_sliding_window=False,
        attention_dropout=0.0,
        decoder_sparse_step=1,
        moe_intermediate_size=args.moe_intermediate,
        num_experts_per_tok=args.top_k,
        num_experts=args.experts,
        norm_topk_prob=True,
        output_router_logits=True,
        router_aux_loss_coef=args.aux_coef,
        mlp_only_layers=[],
        bos_token_id=None,
        eos_token_id=eot,
        pad_token_id=eot,
        architectures=["Qwen3MoeForCausalLM"],
    )


def build_model(config, experts_impl: str):
    from transformers import Qwen3MoeForCausalLM

    model = Qwen3MoeForCausalLM(config)
    set_experts_impl(model, experts_impl)
    return model


def set_experts_impl(model, impl: str) -> None:
    if hasattr(model, "set_experts_implementation"):
        model.set_experts_implementation(impl)
    else:
        model.config._experts_implementation = impl


def param_counts(model, config) -> Dict[str, int]:
    total = sum(p.numel() for p in model.parameters())
    experts = sum(p.numel() for n, p in model.named_parameters() if ".experts." in n)
    per_expert = experts // (config.num_hidden_layers * config.num_experts)
    active = total - experts + per_expert * config.num_hidden_layers * config.num_experts_per_tok
    embed = model.model.embed_tokens.weight.numel()
    return {"total": total, "routed_experts": experts, "per_expert": per_expert, "active_per_token": active,
            "embedding_tied": embed, "estimated_8bit_container_mb": round(total * 1.07 / 1e6, 1)}


def generation_config(eot: int, im_end: int):
    from transformers import GenerationConfig

    return GenerationConfig(eos_token_id=[eot, im_end], pad_token_id=eot, bos_token_id=None,
                            do_sample=True, temperature=0.7, top_p=0.9, max_new_tokens=128)


def optimizer_for(model, args):
    decay, no_decay = [], []
    for n, p in model.named_parameters():
        # matrices decay; norms, router and the (tied) embedding do not
        (decay if p.ndim >= 2 and "embed_tokens" not in n and ".gate." not in n and not n.endswith("gate.weight") else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8,
    )


def lr_at(step: int, args) -> float:
    """Linear warmup, then cosine from lr down to min_lr_ratio * lr at the last step."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    progress = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
    return args.lr * (args.min_lr_ratio + (1 - args.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Batcher:
    """Random windows of seq_len+... tokens from the training stream, drawn from a seeded generator."""

    def __init__(self, stream: np.ndarray, seq_len: int, batch: int, seed: int):
        self.stream = torch.from_numpy(stream.astype(np.int64))
        self.seq_len, self.batch = seq_len, batch
        self.gen = torch.Generator().manual_seed(seed)

    def next(self) -> torch.Tensor:
        starts = torch.randint(0, len(self.stream) - self.seq_len, (self.batch,), generator=self.gen)
        return torch.stack([self.stream[s:s + self.seq_len] for s in starts.tolist()])

    def state(self):
        return self.gen.get_state()

    def set_state(self, s):
        self.gen.set_state(s)


def load_entropies(router_logits, k: int) -> List[float]:
    """Normalized entropy of each layer's top-k expert load over the batch (1 = perfectly even, 0 = one expert)."""
    ents = []
    for rl in router_logits:
        rl = rl.detach().reshape(-1, rl.size(-1))
        E = rl.size(-1)
        load = torch.bincount(rl.topk(k, dim=-1).indices.reshape(-1), minlength=E).double()
        p = load / load.sum()
        ents.append(float(-(p[p > 0] * p[p > 0].log()).sum() / math.log(E)))
    return ents


def train_step(model, batch: torch.Tensor, coef: float):
    out = model(input_ids=batch, labels=batch, output_router_logits=True, use_cache=False)
    aux = float(out.aux_loss.detach()) if out.aux_loss is not None else 0.0
    lm = float(out.loss.detach()) - coef * aux
    ents = load_entropies(out.router_logits, model.config.num_experts_per_tok)
    return out.loss, lm, aux, ents


@torch.no_grad()
def heldout_loss(model, windows: torch.Tensor, batch: int = 16) -> float:
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        logits = model(input_ids=w, use_cache=False, output_router_logits=False).logits
        loss = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                                 w[:, 1:].reshape(-1), reduction="sum")
        total += float(loss)
        count += w[:, 1:].numel()
    model.train()
    return total / count


# ------------------------------------------------------------------ bench

def bench(args, argv) -> Dict[str, float]:
    """Each implementation runs in a child process, so one that runs out of memory cannot end the others."""
    import subprocess

    impls = [i for i in args.bench_impls.split(",") if i]
    if len(impls) > 1:
        results = {}
        for impl in impls:
            child = os.path.join(args.out, f"bench-{impl}.json")
            if os.path.exists(child):
                os.remove(child)
            cmd = [sys.executable, os.path.abspath(__file__)] + list(argv) + ["--bench-impls", impl]
            rc = subprocess.run(cmd).returncode
            if rc == 0 and os.path.exists(child):
                with open(child) as f:
                    results.update(json.load(f))
                os.remove(child)
            else:
                print(f"{impl}: failed (exit code {rc}; -9 is the out-of-memory killer)", flush=True)
        return results
    set_threads(args.threads)
    torch.manual_seed(args.seed)
    stream = np.random.default_rng(args.seed).integers(0, args.vocab, size=200_000).astype(np.int32)
    results = {}
    for impl in impls:
        if impl == "batched_mm":
            # batched_mm gathers each routed token's expert weights: tokens * top_k * 3*H*I floats per layer,
            # all kept for the backward pass.
            need = args.batch_size * args.seq_len * args.top_k * 3 * args.hidden * args.moe_intermediate * 4 * args.layers
            ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            if need > ram // 2:
                print(f"batched_mm: skipped (needs ~{need / 2**30:.0f} GiB of gathered expert weights; "
                      f"machine has {ram / 2**30:.0f} GiB)", flush=True)
                results[impl] = {"skipped": f"needs ~{need / 2**30:.0f} GiB for training activations"}
                continue
        torch.manual_seed(args.seed)
        config = model_config(args, args.vocab, 0, 2)
        try:
            model = build_model(config, impl)
        except Exception as e:  # an implementation this build lacks
            print(f"{impl}: unavailable ({e})", flush=True)
            continue
        model.train()
        opt = optimizer_for(model, args)
        batcher = Batcher(stream, args.seq_len, args.batch_size, args.seed)
        warm = 3
        t0 = None
        try:
            for step in range(args.bench + warm):
                if step == warm:
                    t0 = time.perf_counter()
                loss, lm, aux, _ = train_step(model, batcher.next(), args.aux_coef)
                loss.backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
        except Exception as e:
            print(f"{impl}: failed ({type(e).__name__}: {e})", flush=True)
            continue
        dt = time.perf_counter() - t0
        tps = args.bench * args.batch_size * args.seq_len / dt
        results[impl] = {"s_per_step": dt / args.bench, "tokens_per_s": tps, "last_loss": lm}
        print(f"{impl}: {dt / args.bench:.3f} s/step, {tps:.0f} tokens/s (loss {lm:.3f} aux {aux:.3f})", flush=True)
    with open(os.path.join(args.out, f"bench-{impls[0]}.json"), "w") as f:
        json.dump(results, f)
    return results


def _read_bench(out: str) -> Optional[Dict]:
    path = os.path.join(out, "bench.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def pick_impl(args) -> str:
    if args.experts_impl != "auto":
        return args.experts_impl
    bench_file = os.path.join(args.out, "bench.json")
    if os.path.exists(bench_file):
        with open(bench_file) as f:
            res = json.load(f).get("results", {})
        if res:
            timed = {k: v for k, v in res.items() if "s_per_step" in v}
            if timed:
                return min(timed, key=lambda k: timed[k]["s_per_step"])
    return "grouped_mm"


# ------------------------------------------------------------------ checkpoints

def save_checkpoint(model, hf_tok, folder: str, gen_cfg, info: Dict, extra_state: Optional[Dict] = None) -> None:
    tmp = folder + ".tmp"
    if os.path.exists(tmp):
        shutil.rmtree(tmp)
    os.makedirs(tmp)
    model.save_pretrained(tmp)
    save_tokenizer(hf_tok, tmp)
    gen_cfg.save_pretrained(tmp)
    with open(os.path.join(tmp, "training_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    if extra_state is not None:
        torch.save(extra_state, os.path.join(tmp, "trainer_state.pt"))
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.replace(tmp, folder)


def checkpoints(out: str) -> List[Tuple[int, str]]:
    found = []
    for name in os.listdir(out):
        if name.startswith("checkpoint-") and name[len("checkpoint-"):].isdigit():
            found.append((int(name[len("checkpoint-"):]), os.path.join(out, name)))
    return sorted(found)


def prune_checkpoints(out: str, keep: int) -> None:
    cks = checkpoints(out)
    for step, path in cks[:-1]:  # optimizer state only in the newest
        state = os.path.join(path, "trainer_state.pt")
        if os.path.exists(state):
            os.remove(state)
    for step, path in cks[:-keep] if keep > 0 else []:
        shutil.rmtree(path)


# ------------------------------------------------------------------ training

def train(args) -> str:
    set_threads(args.threads)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.manual_seed(args.seed)
    os.makedirs(args.out, exist_ok=True)

    t_prep = time.time()
    corpus_info = prepare_corpus(args.out)
    train_docs = demo_corpus.load(os.path.join(args.out, "corpus"), "train")
    hf_tok = train_tokenizer(args.out, train_docs, args.vocab)
    tok_sha = sha256_file(os.path.join(args.out, "tokenizer", "tokenizer.json"))
    train_ids, heldout_ids = load_streams(args.out, hf_tok)
    eot = hf_tok.convert_tokens_to_ids("<|endoftext|>")
    im_end = hf_tok.convert_tokens_to_ids("<|im_end|>")
    vocab_size = len(hf_tok)
    print(f"corpus: {corpus_info['train_characters']} chars / {len(train_ids)} tokens train, "
          f"{corpus_info['heldout_characters']} chars / {len(heldout_ids)} tokens held-out; vocab {vocab_size}; "
          f"prep {time.time() - t_prep:.1f}s", flush=True)

    impl = pick_impl(args)
    config = model_config(args, vocab_size, eot, im_end)
    torch.manual_seed(args.seed)
    model = build_model(config, impl)
    model.train()
    counts = param_counts(model, config)
    print(f"model: {json.dumps(counts)}; experts implementation {impl}", flush=True)
    gen_cfg = generation_config(eot, im_end)
    opt = optimizer_for(model, args)
    batcher = Batcher(train_ids, args.seq_len, args.batch_size, args.seed + 1)
    eval_wins = eval_windows(heldout_ids, args.seq_len, args.eval_windows)

    tokens_per_step = args.batch_size * args.seq_len
    info = {
        "description": "EdgeMoE demo model: a small Qwen3-MoE language model trained from scratch on public-domain English",
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in ("report", "bench", "resume", "no_report")},
        "experts_implementation": impl,
        "experts_implementation_bench": _read_bench(args.out),
        "tokens_per_step": tokens_per_step,
        "corpus": {
            **corpus_info,
            "builder": "tools/demo_corpus.py",
            "train_tokens": int(len(train_ids)),
            "heldout_tokens": int(len(heldout_ids)),
            "document_separator": "<|endoftext|> after each document",
        },
        "tokenizer": {"type": "byte-level BPE (tokenizers)", "vocab_size": vocab_size, "special_tokens": SPECIAL_TOKENS,
                      "tokenizer_json_sha256": tok_sha, "trained_on": "training split"},
        "parameters": counts,
        "software": {"python": platform.python_version(), "torch": torch.__version__,
                     "transformers": __import__("transformers").__version__,
                     "tokenizers": __import__("tokenizers").__version__, "numpy": np.__version__},
        "machine": {"platform": platform.platform(), "threads": args.threads},
    }

    log_path = os.path.join(args.out, "train_log.csv")
    start_step, elapsed0 = 0, 0.0
    if args.resume and checkpoints(args.out):
        step0, path = checkpoints(args.out)[-1]
        state_path = os.path.join(path, "trainer_state.pt")
        if os.path.exists(state_path):
            state = torch.load(state_path, weights_only=False)
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            batcher.set_state(state["batcher"])
            torch.set_rng_state(state["torch_rng"])
            start_step = step0
            elapsed0 = float(state.get("elapsed_s", 0.0))
            print(f"resumed from {path} at step {start_step}", flush=True)
    header = ["step", "elapsed_s", "lr", "loss", "lm_loss", "aux_loss", "heldout_loss", "tokens_per_s",
              "load_entropy_mean", "load_entropy_min"]
    kept = []
    if start_step and os.path.exists(log_path):  # drop rows logged after the checkpoint
        with open(log_path, newline="") as f:
            kept = [r for r in csv.reader(f) if r and r[0].isdigit() and int(r[0]) <= start_step]
    log_f = open(log_path, "w", newline="")
    log = csv.writer(log_f)
    log.writerow(header)
    log.writerows(kept)

    t0 = time.time() - elapsed0
    window_t, window_steps = time.time(), 0
    acc_lm, acc_aux, acc_n, acc_ent = 0.0, 0.0, 0, []
    last_heldout = None
    for step in range(start_step, args.steps):
        lr = lr_at(step, args)
        for g in opt.param_groups:
            g["lr"] = lr
        loss, lm, aux, ents = train_step(model, batcher.next(), args.aux_coef)
        acc_ent = [a + e for a, e in zip(acc_ent, ents)] if acc_n else ents
        if not math.isfinite(lm):
            raise RuntimeError(f"non-finite loss at step {step}")
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        acc_lm, acc_aux, acc_n = acc_lm + lm, acc_aux + aux, acc_n + 1
        window_steps += 1
        done = step + 1
        held = None
        if done % args.eval_every == 0 or done == args.steps:
            held = heldout_loss(model, eval_wins)
            last_heldout = held
        if done % args.log_every == 0 or held is not None or done == args.steps:
            tps = window_steps * tokens_per_step / max(1e-9, time.time() - window_t)
            row = [done, round(time.time() - t0, 1), f"{lr:.3e}", round(acc_lm / acc_n + args.aux_coef * acc_aux / acc_n, 4),
                   round(acc_lm / acc_n, 4), round(acc_aux / acc_n, 4), "" if held is None else round(held, 4), round(tps),
                   round(sum(acc_ent) / len(acc_ent) / acc_n, 4), round(min(acc_ent) / acc_n, 4)]
            log.writerow(row)
            log_f.flush()
            eta = (args.steps - done) * (time.time() - t0 - elapsed0) / max(1, done - start_step)
            print(f"step {done}/{args.steps} lr {lr:.2e} lm {acc_lm / acc_n:.4f} aux {acc_aux / acc_n:.4f}"
                  + ("" if held is None else f" heldout {held:.4f} (ppl {math.exp(held):.1f})")
                  + f" load-H {row[8]:.3f} (min {row[9]:.3f}) {tps:.0f} tok/s eta {eta / 60:.1f} min", flush=True)
            acc_lm, acc_aux, acc_n = 0.0, 0.0, 0
            window_t, window_steps = time.time(), 0
        if done % args.save_every == 0 and done != args.steps:
            ck_info = {**info, "step": done, "elapsed_s": round(time.time() - t0, 1), "heldout_loss_subset": last_heldout}
            save_checkpoint(model, hf_tok, os.path.join(args.out, f"checkpoint-{done}"), gen_cfg, ck_info,
                            {"model": model.state_dict(), "optimizer": opt.state_dict(), "batcher": batcher.state(), "torch_rng": torch.get_rng_state(), "step": done,
                             "elapsed_s": time.time() - t0})
            prune_checkpoints(args.out, args.keep_checkpoints)
            print(f"saved checkpoint-{done}", flush=True)
    log_f.close()

    final = os.path.join(args.out, "final")
    info.update({"step": args.steps, "elapsed_s": round(time.time() - t0, 1), "heldout_loss_subset": last_heldout,
                 "training_tokens_seen": args.steps * tokens_per_step,
                 "epochs_seen": round(args.steps * tokens_per_step / len(train_ids), 2)})
    save_checkpoint(model, hf_tok, final, gen_cfg, info)
    print(f"saved {final}", flush=True)
    return final


# ------------------------------------------------------------------ report

def _entropy(p: np.ndarray) -> float:
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def routing(model, windows: torch.Tensor, k: int, batch: int = 16):
    """Per window batch: (sum of token NLL, token count, [layer] -> top-k expert ids [N, k], mean router entropy per layer)."""
    model.eval()
    nll, count = 0.0, 0
    topk: List[List[np.ndarray]] = [[] for _ in range(model.config.num_hidden_layers)]
    ent = np.zeros(model.config.num_hidden_layers)
    for i in range(0, len(windows), batch):
        w = windows[i:i + batch]
        out = model(input_ids=w, use_cache=False, output_router_logits=True)
        logits = out.logits
        nll += float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)).float(),
                                                       w[:, 1:].reshape(-1), reduction="sum"))
        count += w[:, 1:].numel()
        for l, rl in enumerate(out.router_logits):
            rl = rl.float().reshape(-1, rl.size(-1))
            probs = rl.softmax(-1)
            ent[l] += float(-(probs * probs.clamp_min(1e-12).log()).sum())
            topk[l].append(rl.topk(k, dim=-1).indices.numpy())
    n_tok = sum(len(t) for t in topk[0])
    return nll, count, [np.concatenate(t) for t in topk], ent / max(1, n_tok)


def write_report(ckpt: str, out: str, args) -> Dict:
    from transformers import Qwen3MoeForCausalLM

    set_threads(args.threads)
    torch.manual_seed(args.seed)
    hf_tok = load_tokenizer(ckpt)
    if not os.path.exists(os.path.join(out, "corpus", "train.jsonl")):
        prepare_corpus(out)
    train_ids, heldout_ids = load_streams(out, hf_tok)
    model = Qwen3MoeForCausalLM.from_pretrained(ckpt, dtype=torch.float32)
    model.eval()
    cfg = model.config
    E, L, K = cfg.num_experts, cfg.num_hidden_layers, cfg.num_experts_per_tok
    seq_len = args.seq_len
    t0 = time.time()

    held = eval_windows(heldout_ids, seq_len)
    nll, count, held_top, router_ent = routing(model, held, K)
    # the co-occurrence table is fit on training windows spread over the whole split
    fit = eval_windows(train_ids, seq_len, args.report_train_windows)
    _, _, fit_top, _ = routing(model, fit, K)

    layers = []
    for l in range(L):
        load = np.bincount(held_top[l].reshape(-1), minlength=E).astype(np.float64)
        load /= load.sum()
        top1 = np.bincount(held_top[l][:, 0], minlength=E).astype(np.float64)
        top1 /= top1.sum()
        layers.append({
            "layer": l,
            "load_topk": [round(float(x), 4) for x in load],  # fraction of top-k assignments per expert
            "load_top1": [round(float(x), 4) for x in top1],
            "load_entropy_nats": round(_entropy(load), 4),
            "load_entropy_normalized": round(_entropy(load) / math.log(E), 4),
            "max_load_over_uniform": round(float(load.max() * E), 3),
            "min_load_over_uniform": round(float(load.min() * E), 3),
            "mean_router_entropy_nats": round(float(router_ent[l]), 4),
            "uniform_router_entropy_nats": round(math.log(E), 4),
        })

    transitions = []
    for l in range(L - 1):
        co = np.zeros((E, E))
        np.add.at(co, (fit_top[l][:, 0], fit_top[l + 1][:, 0]), 1)
        # pair table for top-k prediction: counts of every layer-(l+1) top-k expert given layer l's top-1
        co_k = np.zeros((E, E))
        for j in range(K):
            np.add.at(co_k, (fit_top[l][:, 0], fit_top[l + 1][:, j]), 1)
        freq1 = np.bincount(fit_top[l + 1][:, 0], minlength=E)
        freqk = np.bincount(fit_top[l + 1].reshape(-1), minlength=E)
        pred = co.argmax(1)[held_top[l][:, 0]]
        actual = held_top[l + 1][:, 0]
        acc = float((pred == actual).mean())
        base = float((freq1.argmax() == actual).mean())
        # top-k recall: predict K experts for layer l+1, count how many of its actual top-k were covered
        pred_k = np.argsort(-co_k, axis=1, kind="stable")[:, :K][held_top[l][:, 0]]
        base_k = np.argsort(-freqk, kind="stable")[:K]
        actual_k = held_top[l + 1]
        hit = np.mean([len(set(p) & set(a)) / K for p, a in zip(pred_k.tolist(), actual_k.tolist())])
        hit_base = np.mean([len(set(base_k.tolist()) & set(a)) / K for a in actual_k.tolist()])
        transitions.append({
            "from_layer": l, "to_layer": l + 1,
            "top1_accuracy": round(acc, 4), "top1_frequency_baseline": round(base, 4),
            f"top{K}_recall": round(float(hit), 4), f"top{K}_frequency_baseline": round(float(hit_base), 4),
            "uniform_chance_top1": round(1 / E, 4),
        })

    samples = []
    eot = hf_tok.convert_tokens_to_ids("<|endoftext|>")
    im_end = hf_tok.convert_tokens_to_ids("<|im_end|>")
    for i, prompt in enumerate(SAMPLE_PROMPTS):
        ids = torch.tensor([hf_tok.encode(prompt, add_special_tokens=False)])
        torch.manual_seed(args.seed + i)
        gen = model.generate(ids, max_new_tokens=80, do_sample=True, temperature=0.6, top_p=0.9,
                             eos_token_id=[eot, im_end], pad_token_id=eot)
        samples.append({"prompt": prompt, "completion": hf_tok.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)})

    info_path = os.path.join(ckpt, "training_info.json")
    step = None
    if os.path.exists(info_path):
        with open(info_path) as f:
            step = json.load(f).get("step")
    mean_acc = float(np.mean([t["top1_accuracy"] for t in transitions]))
    mean_base = float(np.mean([t["top1_frequency_baseline"] for t in transitions]))
    report = {
        "checkpoint": os.path.abspath(ckpt),
        "step": step,
        "heldout": {"tokens_scored": count, "windows": len(held), "seq_len": seq_len,
                    "loss": round(nll / count, 4), "perplexity": round(math.exp(nll / count), 2)},
        "routing": {
            "n_experts": E, "top_k": K,
            "mean_load_entropy_normalized": round(float(np.mean([x["load_entropy_normalized"] for x in layers])), 4),
            "mean_router_entropy_nats": round(float(np.mean([x["mean_router_entropy_nats"] for x in layers])), 4),
            "per_layer": layers,
        },
        "next_layer_prediction": {
            "method": (f"co-occurrence table of (layer l top-1, layer l+1 top-1) fit on {len(fit)} training windows "
                       f"({len(fit_top[0])} tokens); predict argmax for each held-out token. Baseline: always predict "
                       f"layer l+1's most frequent top-1 expert on the training windows. top{K}_recall: the {K} experts "
                       f"most often in layer l+1's top-{K} given layer l's top-1, fraction of the actual top-{K} covered."),
            "mean_top1_accuracy": round(mean_acc, 4),
            "mean_top1_frequency_baseline": round(mean_base, 4),
            "per_transition": transitions,
        },
        "samples": {"decoding": "temperature 0.6, top_p 0.9, 80 new tokens, torch seed = --seed + prompt index",
                    "items": samples},
        "report_seconds": round(time.time() - t0, 1),
    }
    path = os.path.join(ckpt, "report.json")
    with open(path, "w") as f:
        json.dump(report, f, indent=2, ensure_ascii=False)
    print(f"report: held-out ppl {report['heldout']['perplexity']}, mean load entropy (normalized) "
          f"{report['routing']['mean_load_entropy_normalized']}, next-layer top-1 acc {mean_acc:.3f} vs baseline "
          f"{mean_base:.3f} -> {path}", flush=True)
    for s in samples:
        print(f"  {s['prompt']!r} -> {s['completion']!r}", flush=True)
    return report


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    if args.bench:
        res = bench(args, argv)
        if len(args.bench_impls.split(",")) == 1:
            return
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump({"threads": args.threads, "batch_size": args.batch_size, "seq_len": args.seq_len,
                       "steps": args.bench, "results": res}, f, indent=2)
        return
    if args.report:
        write_report(args.report, args.out, args)
        return
    final = train(args)
    if not args.no_report:
        write_report(final, args.out, args)


if __name__ == "__main__":
    main()
