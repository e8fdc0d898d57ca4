"""Writes diffusers_postprocess.json: decoded values in [-1, 1] and the bytes diffusers' VaeImageProcessor makes of them.

    /usr/bin/python3 make_postprocess.py

The arithmetic is diffusers' postprocess(output_type="pil") step by step (src/diffusers/image_processor.py):
denormalize  -> (images * 0.5 + 0.5).clamp(0, 1)        on the float32 torch tensor
pt_to_numpy  -> images.cpu().permute(0, 2, 3, 1).float().numpy()
numpy_to_pil -> (images * 255).round().astype("uint8")  (NumPy rounds half to even)
Made with Debian 12's python3-torch 1.13.1 and NumPy 1.24.2. Values are float32 bit patterns.
"""
import json
import os

import numpy as np
import torch

values = []
for k in range(256):
    # Inputs whose byte value lands on or next to k + 0.5 (the rounding boundary) and on k itself.
    for target in (k + 0.5, float(k)):
        centre = np.float32(target / 127.5 - 1.0)
        for d in range(-3, 4):
            values.append(np.nextafter(centre, np.float32(np.inf if d > 0 else -np.inf), dtype=np.float32) if d else centre)
            for _ in range(abs(d) - 1):
                values[-1] = np.nextafter(values[-1], np.float32(np.inf if d > 0 else -np.inf), dtype=np.float32)
rng = np.random.default_rng(4)
values += list(rng.uniform(-1.3, 1.3, 2000).astype(np.float32))
values += [np.float32(v) for v in (-1, 1, 0, -0.0, -1.5, 1.5, 3e38, -3e38, 1e-45, -1e-45, 1e-20, -1e-20)]
x = torch.tensor(np.array(values, dtype=np.float32)).reshape(1, 1, 1, -1)
denormalized = (x * 0.5 + 0.5).clamp(0, 1)
images = denormalized.cpu().permute(0, 2, 3, 1).float().numpy()
out = (images * 255).round().astype("uint8").flatten()
bits = np.array(values, dtype=np.float32).view(np.uint32)
half_even = int(sum(1 for v, b in zip(images.flatten(), out) if (v * np.float32(255)) % 1 == 0.5))
document = {
    "pipeline": "diffusers VaeImageProcessor.postprocess: denormalize, pt_to_numpy, numpy_to_pil",
    "torch": torch.__version__,
    "numpy": np.__version__,
    "exact_halves": half_even,
    "bits": [int(b) for b in bits],
    "bytes": [int(b) for b in out],
}
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "diffusers_postprocess.json")
with open(path, "w") as f:
    json.dump(document, f, separators=(",", ":"))
    f.write("\n")
print(path, len(values), "values,", half_even, "exact halves")
