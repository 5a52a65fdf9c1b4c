"""The EasyAnimate slice / MagViT video VAE: model, loading, tiling and seam options."""

from .loading import load_vae
from .posterior import DiagonalGaussian
from .seams import SEAM_OPTIONS, seam_ratio
from .tiling import Tiling
from .video_vae import VideoVAE

__all__ = ["SEAM_OPTIONS", "DiagonalGaussian", "Tiling", "VideoVAE", "load_vae", "seam_ratio"]
