#!/usr/bin/env python3
"""Fuzz the parsers of untrusted model files with atheris (coverage-guided).

    python tools/fuzz_parsers.py CORPUS_DIR [atheris/libFuzzer flags, e.g. -max_total_time=60]

Each input is a file handed to one parser, picked by its first bytes: an .emoe container
(open_container: the C++ reader and the manifest's JSON, then edgemoe.load and a forward pass), a safetensors file
(the converter's reader), or a GGUF file (the GGUF converter's reader, config and tokenizer).
The package's own errors (edgemoe.EdgeMoEError and subclasses) are the expected answer to bad
input; any other exception, a hang or a crash is a finding. Seed CORPUS_DIR with real files
(tests/test_fuzz.py does, from the test fixtures).
"""
import os
import sys
import tempfile

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
with atheris.instrument_imports():
    import edgemoe
    from edgemoe.format.container import open_container
    from edgemoe.convert.gguf import GGUFCheckpoint, hf_config, tokenizer_section
    from edgemoe.convert.safetensors_reader import SafetensorsFile
    from edgemoe.errors import EdgeMoEError

SCRATCH = os.path.join("/dev/shm" if os.path.isdir("/dev/shm") else tempfile.gettempdir(),
                       f"edgemoe-fuzz-{os.getpid()}")


def parse(data: bytes) -> None:
    with open(SCRATCH, "wb") as f:
        f.write(data)
    try:
        if data[:4] == b"GGUF":
            ck = GGUFCheckpoint(SCRATCH)
            hf_config(ck)
            tokenizer_section(ck)
            for name in list(ck.map)[:4]:
                ck.get(name)
        elif data[:8] == b"EDGEMOE\0":
            open_container(SCRATCH)
            edgemoe.load(SCRATCH, cache_experts=None, threads=1, ctx_size=16).logits([0, 1])
        else:
            st = SafetensorsFile(SCRATCH)
            for name in list(st.tensors)[:4]:
                st.get(name)
    except EdgeMoEError:
        pass  # a clear refusal: what bad input should get


def main() -> None:
    atheris.Setup(sys.argv, lambda data: parse(bytes(data)))
    try:
        atheris.Fuzz()
    finally:
        if os.path.exists(SCRATCH):
            os.unlink(SCRATCH)


if __name__ == "__main__":
    main()
