"""Where the debugger's samples come from: the shipped zoomqa sample, a generated sample of a
registered domain, or an uploaded image with a question. Every bad input becomes a DebugError
with a message the page shows as is; uploads are bounded in bytes, pixels and aspect ratio.
"""
from __future__ import annotations

import io
import json
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image

from vlmagent.domains import DOMAINS, get_domain
from vlmagent.types import Sample

SAMPLE_DIR = Path(__file__).with_name("sample")
# The shipped sample: zoomqa, a digit in a magenta frame, small enough to ship (200 KB).
SHIPPED_SEED, SHIPPED_KIND, SHIPPED_SIZE = 3, "digit", (1001, 667)
MAX_UPLOAD_BYTES = 20 << 20
MAX_UPLOAD_PIXELS = 40_000_000  # far above any pixel budget; stops decompression bombs
MAX_QUESTION_CHARS = 4000
MAX_SEED = 2**32 - 1


class DebugError(ValueError):
    """Bad input from the person at the page; the message is shown there as is."""


def shipped_sample() -> Sample:
    """The zoomqa sample inside the package (see make_shipped_sample)."""
    rec = json.loads((SAMPLE_DIR / "sample.json").read_text(encoding="utf-8"))
    rec["images"] = {k: str(SAMPLE_DIR / v) for k, v in rec["images"].items()}
    return Sample(**rec)


def make_shipped_sample(out_dir: str | Path = SAMPLE_DIR) -> Sample:
    """(Re)generate the shipped sample with the zoomqa domain and a fixed seed (a dev-time
    tool; a test checks the shipped files are what it makes)."""
    from vlmagent.domains import zoomqa

    out = Path(out_dir)
    [s] = zoomqa.make_samples(1, SHIPPED_SEED, out, kinds=(SHIPPED_KIND,), size=SHIPPED_SIZE)
    src = Path(s.images["image"])
    with Image.open(src) as im:
        im.save(out / "zoomqa-sample.png", optimize=True)  # lossless, smaller than level 1
    src.unlink()
    rec = {"id": s.id, "prompt": s.prompt, "images": {"image": "zoomqa-sample.png"},
           "answer": s.answer, "domain": s.domain, "meta": s.meta}
    (out / "sample.json").write_text(json.dumps(rec, indent=1) + "\n", encoding="utf-8")
    return shipped_sample() if out == SAMPLE_DIR else s


def domain_sample(name: str, seed: Any, kind: str, kinds: Sequence[str], out_dir: Path,
                  seen_size: Callable[[int, int], tuple[int, int]],
                  dataset: dict[str, str] | None = None) -> tuple[Sample, list[str]]:
    """A generated sample of domain `name` from `seed`, and what the domain warned about it.
    Without `kind`, the configured `kinds` the domain knows are taken one per seed in turn.
    `dataset`: dataroot / version of a domain that reads a dataset (driving)."""
    if name not in DOMAINS:
        raise DebugError(f"unknown domain {name!r} (valid: {', '.join(DOMAINS)})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise DebugError(f"seed must be a whole number from 0 to {MAX_SEED}, got {seed!r}")
    domain = get_domain(name)
    if not kind:
        known = [k for k in kinds if k in domain.KINDS] or [domain.KINDS[0]]
        kind = known[seed % len(known)]
    with warnings.catch_warnings(record=True) as caught:  # shown on the page instead
        warnings.simplefilter("always")
        try:
            [s] = domain.make_samples(1, seed, out_dir / name, kinds=(kind,),
                                      seen_size=seen_size, **(dataset or {}))
        except ValueError as e:
            raise DebugError(str(e)) from None
    return s, [str(w.message) for w in caught]


def upload_sample(data: bytes, question: str, answer: str = "") -> Sample:
    """An uploaded image and question; `answer` (optional) makes the episode scorable."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise DebugError(f"the image is {len(data) / 2**20:.1f} MiB; the limit is "
                         f"{MAX_UPLOAD_BYTES >> 20} MiB")
    if not question.strip():
        raise DebugError("write a question for the uploaded image")
    if len(question) > MAX_QUESTION_CHARS:
        raise DebugError(f"the question has {len(question)} characters (at most "
                         f"{MAX_QUESTION_CHARS})")
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > MAX_UPLOAD_PIXELS:
                raise DebugError(f"the image is {im.width}x{im.height}; at most "
                                 f"{MAX_UPLOAD_PIXELS // 10**6} megapixels")
            image = im.convert("RGB")
    except DebugError:
        raise
    except Exception as e:  # PIL raises several kinds for non-images and broken files
        raise DebugError(f"the upload is not an image PIL can read ({type(e).__name__}: "
                         f"{e})") from None
    if max(image.size) / min(image.size) > 200:
        raise DebugError(f"the image is {image.width}x{image.height}: the aspect ratio "
                         "must be below 200 (Qwen-VL's limit)")
    return Sample(id="upload", prompt=question.strip(), images={"image": image},
                  answer=answer.strip() or None, domain="upload")
