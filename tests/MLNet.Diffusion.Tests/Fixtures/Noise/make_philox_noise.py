"""Writes philox_a1111.json from AUTOMATIC1111's own NV generator (modules/rng_philox.py, NumPy only).

    /usr/bin/python3 make_philox_noise.py /path/to/stable-diffusion-webui/modules

The fixture in this folder was made with rng_philox.py of AUTOMATIC1111/stable-diffusion-webui (blob of commit 255da37),
NumPy 1.24.2 (Debian 12). Values are float32 bit patterns (uint32).
"""
import hashlib
import json
import os
import sys

import numpy as np

sys.path.insert(0, sys.argv[1])
import rng_philox  # noqa: E402


def u32(a):
    return [int(v) for v in np.asarray(a, dtype=np.float32).view(np.uint32).flatten()]


cases = []
for seed in (0, 1, 42, 2**32 - 1, 2**32 + 5, 123456789012345):
    g = rng_philox.Generator(seed)
    draws = []
    # Successive calls: the offset (first counter word) grows by one per call, whatever its size.
    for shape in ((3, 4), (16,), (1,), (1, 4, 8, 8)):
        draws.append({"shape": list(shape), "bits": u32(g.randn(shape))})
    cases.append({"seed": seed, "draws": draws})

big = rng_philox.Generator(42).randn((1, 4, 64, 64)).astype("<f4")
document = {
    "generator": "modules/rng_philox.py Generator(seed).randn(shape), called in sequence",
    "numpy": np.__version__,
    "cases": cases,
    "latent_1x4x64x64_seed42": {"first_bits": u32(big.flatten()[:64]), "sha256": hashlib.sha256(big.tobytes()).hexdigest()},
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "philox_a1111.json")
with open(path, "w") as f:
    json.dump(document, f, separators=(",", ":"))
    f.write("\n")
print(path, os.path.getsize(path))
