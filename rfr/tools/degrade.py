"""Synthetic CCTV stills: put a face photo into a larger scene at a chosen face width, then degrade it.

Used by ``rfr eval``, the detect recall test and the benchmarks. Everything random comes from the
``numpy.random.Generator`` passed in, so a seed reproduces a scene bit for bit.

Pipeline (in this order, as in a camera): scene texture -> face pasted with a feathered edge after a
small rotation/perspective warp -> optics blur -> exposure (brightness, gamma) -> sensor noise -> JPEG.

Levels (``LEVELS``):

=========  ==========  ===========  ======  ==========  =====  ============  ===========
level      blur sigma  noise sigma  JPEG q  brightness  gamma  rotation deg  perspective
=========  ==========  ===========  ======  ==========  =====  ============  ===========
clean      0           0            none    1.0         1.0    0             0
mild       0.7         4            70      0.8         1.2    +-8           0.04
hard       1.3         10           35      0.5         1.6    +-18          0.10
=========  ==========  ===========  ======  ==========  =====  ============  ===========

Blur and noise are in pixels / grey levels of the scene; rotation is drawn uniformly in +-deg;
perspective moves each corner of the face patch by up to that fraction of the face width.

Measured effect (FaceNet casia-webface rank-1 over 200 LFW identities, faces 32 / 48 / 80 px wide in 640x480):
clean 0.94 / 0.99 / 0.99, mild 0.66 / 0.91 / 0.98, hard 0.04 / 0.20 / 0.65. Face widths follow the MediaPipe
box (``LFW_FACE_FRACTION``); the detector finds mild faces of 32 px and up in 1080p with the default settings.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import numpy.typing as npt

from rfr.core.geometry import Box
from rfr.core.imaging import encode_jpeg

Image = npt.NDArray[np.uint8]

LFW_FACE_FRACTION = 0.41
"""Median width of the MediaPipe face box over the width of a 150x150 LFW photo (5-95 %: 0.35-0.49; measured on
400 photos)."""

LFW_FACE_CENTER = (0.50, 0.55)
"""Median centre of that box, as fractions of the photo width and height."""

SCENE_1080P = (1920, 1080)
SCENE_VGA = (640, 480)


@dataclass(frozen=True)
class Degradation:
    """One named set of degradations (see the module table)."""

    name: str
    blur_sigma: float = 0.0
    noise_sigma: float = 0.0
    jpeg_quality: int | None = None
    brightness: float = 1.0
    gamma: float = 1.0
    max_rotation_deg: float = 0.0
    max_perspective: float = 0.0


LEVELS: dict[str, Degradation] = {
    "clean": Degradation("clean"),
    "mild": Degradation(
        "mild", blur_sigma=0.7, noise_sigma=4.0, jpeg_quality=70, brightness=0.8, gamma=1.2,
        max_rotation_deg=8.0, max_perspective=0.04,
    ),
    "hard": Degradation(
        "hard", blur_sigma=1.3, noise_sigma=10.0, jpeg_quality=35, brightness=0.5, gamma=1.6,
        max_rotation_deg=18.0, max_perspective=0.10,
    ),
}


def _smooth_noise(
    shape: tuple[int, int], cells: int, channels: int, rng: np.random.Generator
) -> npt.NDArray[np.float32]:
    """Zero-mean noise in [-1, 1] with about ``cells`` blobs across the width."""
    height, width = shape
    small = rng.uniform(-1.0, 1.0, (max(2, cells * height // width), cells, channels)).astype(np.float32)
    out = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    return np.asarray(out, dtype=np.float32).reshape(height, width, channels)


def synthetic_background(scene_size: tuple[int, int], rng: np.random.Generator) -> Image:
    """A muted, textured indoor-like scene: a lit gradient, multi-scale grey texture, a faint colour cast,
    shelf- and product-like rectangles and lines, and grain. Never a flat colour."""
    width, height = scene_size
    top, bottom = rng.uniform(60.0, 200.0, 3), rng.uniform(40.0, 160.0, 3)
    ramp = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None, None]
    out = np.empty((height, width, 3), np.float32)
    out[:] = top * (1 - ramp) + bottom * ramp
    for cells, amplitude in ((3, 30.0), (12, 18.0), (48, 10.0), (192, 6.0)):
        out += amplitude * _smooth_noise((height, width), cells, 1, rng)
    out += 12.0 * _smooth_noise((height, width), 6, 3, rng)
    for _ in range(int(rng.integers(15, 40))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1, y1 = x0 + int(rng.integers(width // 40, width // 4)), y0 + int(rng.integers(height // 40, height // 4))
        grey = rng.uniform(30.0, 220.0)
        colour = tuple(float(c) for c in np.clip(grey + rng.normal(0.0, 25.0, 3), 0.0, 255.0))
        cv2.rectangle(out, (x0, y0), (x1, y1), colour, thickness=int(rng.choice([-1, -1, 2, 3])))
    for _ in range(int(rng.integers(3, 10))):
        y = int(rng.integers(0, height))
        end = y + int(rng.integers(-height // 10, height // 10))
        cv2.line(out, (0, y), (width, end), (rng.uniform(20, 230),) * 3, 3)
    out += rng.normal(0.0, 3.0, out.shape).astype(np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _feather_mask(height: int, width: int) -> npt.NDArray[np.float32]:
    """1 in the middle, falling smoothly to 0 over the outer fifth of each side."""

    def ramp(n: int) -> npt.NDArray[np.float32]:
        t = np.minimum(np.arange(n, dtype=np.float32) + 0.5, n - np.arange(n, dtype=np.float32) - 0.5)
        return np.asarray(np.clip(t / max(1.0, 0.2 * n), 0.0, 1.0), dtype=np.float32)

    return np.outer(ramp(height), ramp(width)).astype(np.float32)


def _warp_matrix(size: tuple[int, int], face_px: float, level: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Rotation about the patch centre plus a random corner jitter (perspective), as a 3x3 homography."""
    w, h = size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], np.float32)
    angle = np.deg2rad(rng.uniform(-level.max_rotation_deg, level.max_rotation_deg))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]], np.float32)
    centre = np.array([w / 2, h / 2], np.float32)
    dst = (src - centre) @ rot.T + centre
    dst += rng.uniform(-1.0, 1.0, dst.shape).astype(np.float32) * level.max_perspective * face_px
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _paste(scene: Image, patch: Image, mask: npt.NDArray[np.float32], x0: int, y0: int) -> None:
    h, w = patch.shape[:2]
    region = scene[y0 : y0 + h, x0 : x0 + w].astype(np.float32)
    alpha = mask[..., None]
    scene[y0 : y0 + h, x0 : x0 + w] = (alpha * patch + (1.0 - alpha) * region + 0.5).astype(np.uint8)


def apply_degradation(image: Image, level: Degradation, rng: np.random.Generator) -> Image:
    """Camera-side degradations on a whole RGB image: blur, exposure, noise, JPEG (each skipped when neutral)."""
    out = image
    if level.blur_sigma > 0:
        out = np.asarray(cv2.GaussianBlur(out, (0, 0), level.blur_sigma), dtype=np.uint8)
    if level.brightness != 1.0 or level.gamma != 1.0:
        lut = (255.0 * level.brightness * (np.arange(256) / 255.0) ** level.gamma).clip(0, 255).astype(np.uint8)
        out = np.asarray(cv2.LUT(out, lut), dtype=np.uint8)
    if level.noise_sigma > 0:
        noise = rng.normal(0.0, level.noise_sigma, out.shape).astype(np.float32)
        out = np.clip(out.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    if level.jpeg_quality is not None:
        buf = np.frombuffer(encode_jpeg(out, level.jpeg_quality), dtype=np.uint8)
        decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
        if decoded is None:
            raise RuntimeError("JPEG decoding failed")
        out = np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB), dtype=np.uint8)
    return np.ascontiguousarray(out)


def _scaled_photo(face_img: Image, scale: float) -> Image:
    size = (max(2, round(face_img.shape[1] * scale)), max(2, round(face_img.shape[0] * scale)))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.asarray(cv2.resize(face_img, size, interpolation=interp), dtype=np.uint8)


def place_in_scene(
    face_img: Image,
    face_px: float,
    scene_size: tuple[int, int] = SCENE_1080P,
    level: Degradation | str = "mild",
    rng: np.random.Generator | None = None,
    *,
    face_fraction: float = LFW_FACE_FRACTION,
    background: Image | None = None,
) -> tuple[Image, Box]:
    """Paste ``face_img`` (RGB, a face photo such as a 150x150 LFW image) so its face is ``face_px`` wide.

    ``scene_size`` is (width, height). ``face_fraction`` is the face width over the photo width. Returns
    the degraded RGB scene and the ground-truth face box (a square of side ``face_px`` around the face centre
    after the warp), in scene pixels. ``background`` reuses a prepared scene instead of drawing a new one.
    """
    lvl = LEVELS[level] if isinstance(level, str) else level
    gen = rng if rng is not None else np.random.default_rng(0)
    width, height = scene_size
    patch = _scaled_photo(face_img, face_px / (face_fraction * face_img.shape[1]))
    ph, pw = patch.shape[:2]
    if pw > width or ph > height:
        raise ValueError(f"a {face_px}px face needs a {pw}x{ph} patch, larger than the {width}x{height} scene")
    mask = _feather_mask(ph, pw)
    centre = np.array([[[LFW_FACE_CENTER[0] * pw, LFW_FACE_CENTER[1] * ph]]], np.float32)
    if lvl.max_rotation_deg > 0 or lvl.max_perspective > 0:
        matrix = _warp_matrix((pw, ph), face_px, lvl, gen)
        warped = cv2.warpPerspective(patch, matrix, (pw, ph), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        patch = np.asarray(warped, dtype=np.uint8)
        mask = np.asarray(
            cv2.warpPerspective(mask, matrix, (pw, ph), flags=cv2.INTER_LINEAR, borderValue=0.0), dtype=np.float32
        )
        centre = np.asarray(cv2.perspectiveTransform(centre, matrix), dtype=np.float32)
    scene = synthetic_background(scene_size, gen) if background is None else background.copy()
    x0, y0 = int(gen.integers(0, width - pw + 1)), int(gen.integers(0, height - ph + 1))
    _paste(scene, patch, mask, x0, y0)
    cx, cy = float(centre[0, 0, 0]) + x0, float(centre[0, 0, 1]) + y0
    box = Box(x=cx - face_px / 2, y=cy - face_px / 2, width=float(face_px), height=float(face_px))
    return apply_degradation(scene, lvl, gen), box
