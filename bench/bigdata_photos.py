"""A folder of many real-looking JPEGs for bench_bigdata.py: random crops of imagenette_sub photos.

    PYTHONPATH=src python bench/bigdata_photos.py OUT --count 20000 [--side 224]

Each of imagenette_sub's 3,000 photos gives count/3000 crops (random scale 35-100% of the shorter
side, random place, half of them mirrored), resized to side x side and saved at JPEG quality 90,
in the photo's class folder: photo content and JPEG statistics, not noise. Deterministic (seeded);
files already there are kept, so an interrupted run resumes.
"""

from __future__ import annotations

import argparse
import math
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

SOURCE = Path("/work/scratch/data/imagenette_sub")


def _crops(job: tuple[str, str, int, int, int]) -> int:
    src, out_dir, per_photo, side, seed = job
    rng = np.random.default_rng(seed)
    made = 0
    with Image.open(src) as photo:
        photo = photo.convert("RGB")
        short = min(photo.size)
        for k in range(per_photo):
            dst = Path(out_dir) / f"{Path(src).stem}_{k}.jpg"
            if dst.exists():
                continue
            crop = int(short * rng.uniform(0.35, 1.0))
            left = int(rng.integers(0, photo.width - crop + 1))
            top = int(rng.integers(0, photo.height - crop + 1))
            tile = photo.crop((left, top, left + crop, top + crop)).resize((side, side), Image.Resampling.BICUBIC)
            if rng.random() < 0.5:
                tile = tile.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            tile.save(dst, quality=90)
            made += 1
    return made


def make_photos(out: Path, count: int, side: int = 224, workers: int = 2) -> Path:
    """``out/<class>/*.jpg``: ``count`` crops (rounded up to a multiple of the source photos' count)."""
    sources = sorted(p for p in SOURCE.glob("*/*/*") if p.suffix.lower() in {".jpeg", ".jpg", ".png"})
    per_photo = math.ceil(count / len(sources))
    jobs = []
    for i, src in enumerate(sources):
        (out / src.parent.name).mkdir(parents=True, exist_ok=True)
        jobs.append((str(src), str(out / src.parent.name), per_photo, side, i))
    with ProcessPoolExecutor(workers) as pool:
        made = sum(pool.map(_crops, jobs, chunksize=16))
    print(f"{made} new JPEGs; {sum(1 for _ in out.glob('*/*.jpg'))} in {out}")
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--count", type=int, default=20000)
    parser.add_argument("--side", type=int, default=224)
    args = parser.parse_args()
    make_photos(args.out, args.count, args.side)
