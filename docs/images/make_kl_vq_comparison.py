"""Composes docs/images/shapes-kl-vs-vq.png from TextToImage's output (README, "Unconditional and VQ latent diffusion").

Inputs, made by the sample (same seeds, so the same latents; only the decoder differs):
    TextToImage --variant unconditional --seed 1 --count 3 --output DIR/unconditional.png
    TextToImage --variant vq            --seed 1 --count 3 --output DIR/vq.png
Run: /usr/bin/python3 docs/images/make_kl_vq_comparison.py DIR  (Debian python3-pil, python3-numpy).
One row per seed: the KL-shaped decoder, the VQ decoder, |difference| x 8, and the shape's edge of each at 4x.
"""
import sys

import numpy as np
from PIL import Image

folder = sys.argv[1]
rows = []
for i in range(3):
    kl = np.asarray(Image.open(f"{folder}/unconditional-{i}.png").convert("RGB")).astype(np.int16)
    vq = np.asarray(Image.open(f"{folder}/vq-{i}.png").convert("RGB")).astype(np.int16)
    diff = np.clip(np.abs(kl - vq) * 8, 0, 255)
    # The 64x64 window around the shape's top edge (the shape is vertically centred): where quantisation shows.
    mask = np.abs(kl - kl[0, 0]).sum(axis=2) > 60
    ys, xs = np.nonzero(mask)
    cy, cx = (int(ys.min()), int(xs.mean())) if len(ys) else (96, 128)
    y0, x0 = max(0, min(256 - 64, cy - 32)), max(0, min(256 - 64, cx - 32))
    zoom = [np.kron(a[y0:y0 + 64, x0:x0 + 64], np.ones((4, 4, 1), dtype=np.int16)) for a in (kl, vq)]
    gap = np.full((256, 8, 3), 255, dtype=np.int16)
    rows.append(np.concatenate([kl, gap, vq, gap, diff, gap, zoom[0], gap, zoom[1]], axis=1))
    rows.append(np.full((8, rows[-1].shape[1], 3), 255, dtype=np.int16))
Image.fromarray(np.concatenate(rows[:-1], axis=0).astype(np.uint8)).save("docs/images/shapes-kl-vs-vq.png", optimize=True)
