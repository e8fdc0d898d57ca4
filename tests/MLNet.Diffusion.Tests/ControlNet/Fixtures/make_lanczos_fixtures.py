"""Pillow's Image.resize(size, LANCZOS) on an RGB picture, the resize diffusers' VaeImageProcessor does by default.

Writes lanczos_input.png (50x37 RGB: a seeded noise over hard edges and gradients, so the kernel's negative lobes
overshoot and clip) and lanczos_{w}x{h}.png for upscales, downscales and one-axis resizes.
Run with Debian's python3-pil and python3-numpy: /usr/bin/python3 make_lanczos_fixtures.py
"""
import os
import sys

import numpy as np
import PIL
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SIZES = [(64, 48), (24, 16), (50, 16), (80, 37), (13, 91)]


def main():
    h, w = 37, 50
    rng = np.random.RandomState(7)
    y, x = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), dtype=np.float64)
    img[..., 0] = np.where((x // 7 + y // 5) % 2 == 0, 255, 0)   # checkerboard: hard edges
    img[..., 1] = x * 255.0 / (w - 1)                           # horizontal gradient
    img[..., 2] = np.where((x - 25) ** 2 + (y - 18) ** 2 < 120, 250, 10)
    img += rng.randint(-20, 21, size=img.shape)
    img = np.clip(img, 0, 255).astype(np.uint8)
    source = Image.fromarray(img, "RGB")
    source.save(os.path.join(HERE, "lanczos_input.png"))
    for size in SIZES:
        source.resize(size, resample=Image.LANCZOS).save(os.path.join(HERE, f"lanczos_{size[0]}x{size[1]}.png"))
    with open(os.path.join(HERE, "lanczos_versions.txt"), "w") as f:
        f.write(f"python {sys.version.split()[0]}\nPillow {PIL.__version__}\nnumpy {np.__version__}\n")


if __name__ == "__main__":
    main()
