"""Models named by their Hugging Face repository id, as llama.cpp's `-hf` and mlx-lm's
`--hf-path` take them:

    edgemoe convert Qwen/Qwen3-30B-A3B -o q.emoe                  # a transformers checkpoint
    edgemoe convert Qwen/Qwen3-30B-A3B@main -o q.emoe             # at a revision (branch, tag, commit)
    edgemoe convert unsloth/Qwen3-30B-A3B-GGUF:Q4_K_M -o q.emoe   # one quantization of a GGUF repository

huggingface_hub fetches only the files conversion reads (a checkpoint's config, tokenizer and
weights; a GGUF repository's files of the named quantization, every part of a split one) into its
cache, with its progress bars, or finds them there: with HF_HUB_OFFLINE=1 nothing is downloaded
and a model that is not cached is a clear error.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional, Tuple

from ..errors import EdgeMoEError, FormatError

# owner/name, optionally @revision and :QUANT (a GGUF file's quantization tag)
_REPO = re.compile(r"^(?P<repo>[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*)(?:@(?P<rev>[\w./-]+?))?(?::(?P<quant>[\w.-]+))?$")

# What convert_hf reads from a checkpoint folder (edgemoe/convert/hf.py and safetensors_reader.py).
CHECKPOINT_FILES = ["config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                    "special_tokens_map.json", "chat_template.jinja", "chat_template.json",
                    "*.safetensors", "*.safetensors.index.json"]

# What `edgemoe doctor` reads of a checkpoint: its config (sizes come from it, not the weights).
CONFIG_FILES = ["config.json", "generation_config.json", "tokenizer_config.json"]

_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$")


class HubError(EdgeMoEError):
    """A model named by a Hugging Face repository id could not be found or fetched."""


def parse_repo_id(src: str) -> Optional[Tuple[str, Optional[str], Optional[str]]]:
    """(repo, revision, quant) if `src` names a repository rather than a local path, else None."""
    if os.path.exists(src) or src.startswith((".", "/", "~")) or src.endswith((".gguf", ".emoe")):
        return None
    m = _REPO.match(src)
    return (m["repo"], m["rev"], m["quant"]) if m else None


def resolve_source(src: str, progress: bool = True, files: Optional[List[str]] = None) -> str:
    """A local path for `src`: itself if it is one, else the cached or downloaded checkpoint
    folder (only `files` of it, when given), or the (first) GGUF file of the named quantization."""
    parsed = parse_repo_id(src)
    if parsed is None:
        return src
    repo, revision, quant = parsed
    try:
        import huggingface_hub
        from huggingface_hub import errors as hub_errors
        from huggingface_hub.utils import disable_progress_bars, enable_progress_bars
    except ImportError:
        raise HubError(f"{src} looks like a Hugging Face repository id, but huggingface_hub is not "
                       f"installed (pip install huggingface_hub), and there is no such local path") from None
    patterns = (files or CHECKPOINT_FILES) if quant is None else _quant_patterns(quant)
    if not progress:
        disable_progress_bars()
    try:
        folder = huggingface_hub.snapshot_download(repo, revision=revision, allow_patterns=patterns)
    except (hub_errors.LocalEntryNotFoundError, hub_errors.OfflineModeIsEnabled) as e:
        raise HubError(f"{src}: not in the local Hugging Face cache ({_cache_dir()}) and cannot be downloaded "
                       f"(offline, or no network): {_first_line(e)}") from None
    except hub_errors.GatedRepoError:
        raise HubError(f"{src}: the repository is gated: accept its terms on huggingface.co and log in "
                       f"(`hf auth login` or HF_TOKEN)") from None
    except (hub_errors.RepositoryNotFoundError, hub_errors.RevisionNotFoundError) as e:
        raise HubError(f"{src}: no such repository or revision on the Hugging Face Hub "
                       f"(private ones need HF_TOKEN): {_first_line(e)}") from None
    except (hub_errors.HfHubHTTPError, OSError, ValueError) as e:
        raise HubError(f"{src}: cannot fetch it from the Hugging Face Hub: {_first_line(e)}") from None
    finally:
        if not progress:
            enable_progress_bars()
    if quant is None:
        if not os.path.isfile(os.path.join(folder, "config.json")):
            ggufs = _ggufs(folder)
            hint = f" It holds GGUF files: name a quantization, e.g. {repo}:Q4_K_M." if ggufs else ""
            raise FormatError(f"{src}: the repository has no config.json (not a transformers checkpoint).{hint}")
        return folder
    return _pick_gguf(folder, src, quant)


def _quant_patterns(quant: str) -> List[str]:
    # fnmatch is case-sensitive (repositories spell tags Q4_K_M or q4_k_m); its * also matches
    # "/", so files in subfolders match too
    return sorted({f"*{q}*.gguf" for q in (quant, quant.upper(), quant.lower())})


def _ggufs(folder: str) -> List[str]:
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, f), folder) for f in files if f.endswith(".gguf")]
    return sorted(out)


def _pick_gguf(folder: str, src: str, quant: str) -> str:
    """The one GGUF model of `quant` (its first part when split); projector files left out."""
    wanted = [f for f in _ggufs(folder) if quant.lower() in os.path.basename(f).lower()
              and not os.path.basename(f).lower().startswith("mmproj")]
    firsts = [f for f in wanted if not _SPLIT.search(f) or _SPLIT.search(f).group(1) == "00001"]
    if not firsts:
        raise FormatError(f"{src}: no GGUF file of quantization {quant} in the repository"
                          + (f" (it has: {', '.join(_ggufs(folder))})" if _ggufs(folder) else ""))
    if len(firsts) > 1:
        raise FormatError(f"{src}: several GGUF models match {quant}: {', '.join(firsts)}; name one more exactly")
    return os.path.join(folder, firsts[0])


def _cache_dir() -> str:
    from huggingface_hub import constants

    return constants.HF_HUB_CACHE


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
