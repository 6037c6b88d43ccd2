"""What real cameras add to a scene: photographic backdrops and the ways pictures degrade.

The stick-figure scenes alone teach a model that every textured or blurred frame is unusual,
which is what a real camera sends all day. So some backdrops are real photographs and some
frames are degraded the way surveillance footage is: defocus and motion blur, sensor noise,
heavy JPEG compression and low light. Boxes stay valid: nothing here moves a pixel's position.

The photographs are the JPEGs that scikit-learn ships inside its package (a dependency of the
`export` extra), so the data set stays reproducible without downloading anything and nothing in
this repository is a photograph it did not make.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources

import cv2
import numpy as np

PHOTO_PACKAGE, PHOTO_FOLDER, PHOTO_FILES = "sklearn.datasets", "images", ("china.jpg", "flower.jpg")


@cache
def package_photos() -> tuple[np.ndarray, ...]:
    """The photographs an installed package ships, decoded once (BGR uint8)."""
    folder = resources.files(PHOTO_PACKAGE) / PHOTO_FOLDER
    photos = []
    for name in PHOTO_FILES:
        data = np.frombuffer((folder / name).read_bytes(), np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR)
        if image is None:
            raise FileNotFoundError(f"{PHOTO_PACKAGE}/{PHOTO_FOLDER}/{name}: not a readable image")
        photos.append(image)
    return tuple(photos)


def photo_backdrop(size: int, rng: np.random.Generator) -> np.ndarray:
    """A random square crop of one photograph, scaled to `size`, maybe mirrored and recoloured."""
    photo = package_photos()[int(rng.integers(len(package_photos())))]
    h, w = photo.shape[:2]
    side = int(min(h, w) * rng.uniform(0.35, 1.0))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = cv2.resize(photo[y : y + side, x : x + side], (size, size), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    tint = rng.uniform(0.8, 1.2, 3).astype(np.float32)  # white balance of another camera
    return np.clip(crop.astype(np.float32) * tint, 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class Degradations:
    """How often each degradation hits a frame, and how hard."""

    blur: float = 0.2  # defocus: Gaussian, sigma up to blur_sigma
    blur_sigma: float = 1.2
    motion: float = 0.15  # a horizontal or vertical smear of up to motion_px pixels
    motion_px: int = 5
    noise: float = 0.3  # sensor noise, sigma up to noise_sigma grey levels
    noise_sigma: float = 8.0
    jpeg: float = 0.3  # re-encoded at a quality between jpeg_quality[0] and [1]
    jpeg_quality: tuple[int, int] = (30, 70)
    low_light: float = 0.15  # darkened to low_light_gain of its level, with amplified noise
    low_light_gain: tuple[float, float] = (0.35, 0.6)


def degrade(image: np.ndarray, rng: np.random.Generator, how: Degradations = Degradations()) -> np.ndarray:
    """The frame as a worse camera would have sent it (each effect drawn on its own)."""
    out = image
    if rng.random() < how.blur:
        out = cv2.GaussianBlur(out, (0, 0), float(rng.uniform(0.6, how.blur_sigma)))
    if rng.random() < how.motion:
        length = int(rng.integers(3, how.motion_px + 1))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2, :] = 1.0 / length
        out = cv2.filter2D(out, -1, kernel if rng.random() < 0.5 else kernel.T)
    dark = rng.random() < how.low_light
    if dark:
        gain = float(rng.uniform(*how.low_light_gain))
        out = np.clip(out.astype(np.float32) * gain, 0, 255).astype(np.uint8)
    if dark or rng.random() < how.noise:
        sigma = float(rng.uniform(2.0, how.noise_sigma)) * (1.5 if dark else 1.0)
        out = np.clip(out.astype(np.float32) + rng.normal(0, sigma, out.shape), 0, 255).astype(np.uint8)
    if rng.random() < how.jpeg:
        quality = int(rng.integers(how.jpeg_quality[0], how.jpeg_quality[1] + 1))
        ok, data = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, quality])
        decoded = cv2.imdecode(data, cv2.IMREAD_COLOR) if ok else None
        if decoded is not None:
            out = decoded
    return np.ascontiguousarray(out)
