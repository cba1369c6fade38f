"""Write the validation models here and pack their headers for the device (the data is a hole anyway).

Writes DEST/headers.tar.xz with NAME.gguf truncated after the tensor table, and DEST/sizes.json with each
file's full size; run_device.sh unpacks and `truncate -s`es them back to full size (sparse).  Copying a
tokenizer out of a vocab GGUF takes the gguf reader ~10 s per model, so this is done once, here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "operator"))

from ggufgen import PROJECTORS, SHAPES, write_model, write_projector  # noqa: E402

from modeldeploy.ngl.gguf_header import read_header  # noqa: E402

VOCAB = {
    "llama": "ggml-vocab-llama-bpe.gguf",
    "gemma3": "ggml-vocab-llama-bpe.gguf",
    "deepseek2": "ggml-vocab-deepseek-llm.gguf",
}


def main() -> None:
    vocab_dir, dest = Path(sys.argv[1]), Path(sys.argv[2])
    names = sys.argv[3].split(",")
    work = dest / "models"
    work.mkdir(parents=True, exist_ok=True)
    sizes = {}
    for name in names:
        if name in PROJECTORS:  # a separate mmproj file
            path = write_projector(work / f"{name}.gguf", PROJECTORS[name])
        else:
            shape = SHAPES[name]
            vocab = vocab_dir / VOCAB.get(shape.arch, "ggml-vocab-qwen2.gguf")
            path = write_model(work / f"{name}.gguf", shape, vocab=vocab)
        h = read_header(path)
        sizes[name] = path.stat().st_size
        with path.open("r+b") as fh:
            fh.truncate(h.data_offset)
        print(name, sizes[name], h.data_offset)
    (dest / "sizes.json").write_text(json.dumps(sizes))
    subprocess.run(
        ["tar", "-C", str(work), "-cJf", str(dest / "headers.tar.xz"), *[f"{n}.gguf" for n in names]], check=True
    )
    if "--keep" not in sys.argv:
        for name in names:
            (work / f"{name}.gguf").unlink()
        work.rmdir()


if __name__ == "__main__":
    main()
