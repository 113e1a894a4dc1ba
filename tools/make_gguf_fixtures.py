#!/usr/bin/env python3
"""Write the tiny GGUF test fixtures under tests/fixtures/gguf/ from the tiny HF fixtures.

    python tools/make_gguf_fixtures.py [--out tests/fixtures/gguf]

mixtral-f32.gguf (llama.cpp's `llama` layout, q/k rows permuted), qwen3_moe in Q8_0 and
Q4_0 as llama.cpp's own quantizer writes them (needs llama-cpp-python and gguf), gpt-oss
(gpt_oss_mxfp4: all f32, and with its MXFP4 expert blocks), and glm4_moe, deepseek_v2,
deepseek_v3 and gemma4 in f32 (dense leading layers; latent attention; global layers of their own width).
"""
import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import export_gguf  # noqa: E402

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(FIXTURES, "gguf"))
    a = p.parse_args()
    os.makedirs(a.out, exist_ok=True)
    export_gguf.export(os.path.join(FIXTURES, "mixtral"), os.path.join(a.out, "mixtral-f32.gguf"), "f32")
    # gpt-oss from the hub-shaped fixture: every weight f32 (parity at f32), and with the
    # checkpoint's MXFP4 expert blocks kept, as llama.cpp's converter writes them
    gpt_oss = os.path.join(FIXTURES, "gpt_oss_mxfp4")
    export_gguf.export(gpt_oss, os.path.join(a.out, "gpt_oss-f32.gguf"), "f32")
    export_gguf.export(gpt_oss, os.path.join(a.out, "gpt_oss-mxfp4.gguf"), "f32", experts_mxfp4=True)
    for name in ("glm4_moe", "deepseek_v2", "deepseek_v3", "gemma4"):
        export_gguf.export(os.path.join(FIXTURES, name), os.path.join(a.out, f"{name}-f32.gguf"), "f32")
    with tempfile.TemporaryDirectory() as tmp:
        f32 = os.path.join(tmp, "qwen3_moe-f32.gguf")
        export_gguf.export(os.path.join(FIXTURES, "qwen3_moe"), f32, "f32")
        for kind in ("q8_0", "q4_0"):
            export_gguf.quantize(f32, os.path.join(a.out, f"qwen3_moe-{kind}.gguf"), kind)
    print(f"wrote {sorted(os.listdir(a.out))} to {a.out}")


if __name__ == "__main__":
    main()
