"""The published aspect-ratio buckets (EasyAnimate's ``ASPECT_RATIO_512``).

Training groups samples by the bucket nearest their ratio; image-to-video sizes its output after
the start image the same way, so generation runs at shapes the model was trained on.
"""

from __future__ import annotations

from ..errors import InputError

# ratio (h / w) -> (height, width) at 512 px
ASPECT_RATIO_512 = {
    0.25: (256, 1024), 0.26: (256, 992), 0.27: (256, 960), 0.28: (256, 928), 0.32: (288, 896),
    0.33: (288, 864), 0.35: (288, 832), 0.4: (320, 800), 0.42: (320, 768), 0.48: (352, 736),
    0.5: (352, 704), 0.52: (352, 672), 0.57: (384, 672), 0.6: (384, 640), 0.68: (416, 608),
    0.72: (416, 576), 0.78: (448, 576), 0.82: (448, 544), 0.88: (480, 544), 0.94: (480, 512),
    1.0: (512, 512), 1.07: (512, 480), 1.13: (544, 480), 1.21: (544, 448), 1.29: (576, 448),
    1.38: (576, 416), 1.46: (608, 416), 1.67: (640, 384), 1.75: (672, 384), 2.0: (704, 352),
    2.09: (736, 352), 2.4: (768, 320), 2.5: (800, 320), 2.89: (832, 288), 3.0: (864, 288),
    3.11: (896, 288), 3.62: (928, 256), 3.75: (960, 256), 3.88: (992, 256), 4.0: (1024, 256),
}


def closest_ratio(height: int, width: int) -> float:
    if width <= 0 or height <= 0:
        raise InputError(f"an image or video must have a positive size, got {width}x{height}")
    aspect = height / width
    return min(ASPECT_RATIO_512, key=lambda ratio: abs(ratio - aspect))


def bucket_size(ratio: float, sample_size: int) -> tuple[int, int]:
    """The (height, width) of a bucket at ``sample_size`` instead of 512, floored to 16 px."""
    h, w = ASPECT_RATIO_512[ratio]
    scale = sample_size / 512
    return max(16, int(h * scale) // 16 * 16), max(16, int(w * scale) // 16 * 16)
