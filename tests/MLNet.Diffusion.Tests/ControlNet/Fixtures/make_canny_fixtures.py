"""Canny fixtures for CannyEdgesTests: OpenCV's cv2.Canny on a seeded synthetic RGB image.

Run with Debian's python3-opencv (/usr/bin/python3); the versions it ran with are written to canny_versions.txt.
Outputs: canny_input.png (RGB 8-bit), canny_l1_100_200.png, canny_l2_50_150.png, canny_l1_200_60.png (grayscale
8-bit, 255 = edge). The thresholds of the last one are given high-first: OpenCV swaps them.
"""
import os
import cv2
import numpy as np

here = os.path.dirname(os.path.abspath(__file__))
rng = np.random.default_rng(17)
h, w = 48, 64
yy, xx = np.mgrid[0:h, 0:w]
img = np.zeros((h, w, 3), dtype=np.float64)
img[..., 0] = 40 + 120 * ((xx - 30) ** 2 + (yy - 24) ** 2 < 15 ** 2)           # red disk
img[..., 1] = 30 + 2.5 * xx                                                       # green ramp
img[..., 2] = 200 * ((xx > 8) & (xx < 20) & (yy > 30) & (yy < 44))               # blue box
img += rng.normal(0, 12, size=img.shape)
img = np.clip(np.rint(img), 0, 255).astype(np.uint8)
cv2.imwrite(os.path.join(here, "canny_input.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
# The ControlNet Canny annotator passes the RGB array itself to cv2.Canny (3 channels).
cv2.imwrite(os.path.join(here, "canny_l1_100_200.png"), cv2.Canny(img, 100, 200))
cv2.imwrite(os.path.join(here, "canny_l2_50_150.png"), cv2.Canny(img, 50, 150, L2gradient=True))
cv2.imwrite(os.path.join(here, "canny_l1_200_60.png"), cv2.Canny(img, 200, 60))
with open(os.path.join(here, "canny_versions.txt"), "w") as f:
    f.write(f"opencv {cv2.__version__}, numpy {np.__version__}\n")
