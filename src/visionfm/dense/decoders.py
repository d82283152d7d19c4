"""Dense decoders: a UNETR-style convolutional decoder with skip paths, a light linear decoder, and a U-Net baseline.

Every model maps ``[B, 3, H, W]`` normalised images to ``[B, K, H, W]`` logits (K output channels: segmentation
classes or landmark heatmaps) and is built through the :data:`DENSE_MODELS` registry; the U-Net also takes more
input channels (stacked contrast views, ``--contrast standardize+green_clahe``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..registry import Registry
from .backbone import block_indices, multilevel_features

__all__ = ["DENSE_MODELS", "EncoderDense", "LinearDecoder", "MonaiUNet", "UNETRDecoder", "build_dense_model"]

DENSE_MODELS: Registry = Registry("dense model")


def _conv(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv + BatchNorm + ReLU."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _up(cin: int, cout: int, times: int) -> nn.Sequential:
    """``times`` stride-2 transposed convolutions, each followed by a 3x3 conv block (UNETR's skip projection)."""
    layers: list[nn.Module] = []
    for i in range(times):
        layers += [nn.ConvTranspose2d(cin if i == 0 else cout, cout, 2, stride=2), _conv(cout, cout)]
    return nn.Sequential(*layers) if layers else _conv(cin, cout)


class UNETRDecoder(nn.Module):
    """UNETR-style decoder: four ViT levels upsampled to 2x, 4x, 8x grid size and fused coarse to fine.

    Args:
        embed_dim: ViT token width D.
        out_channels: K.
        widths: channels at grid x1 (deepest), x2, x4, x8, x16 (full resolution).
        patch_size: the encoder's patch; from 12 px up a last 2x step reaches full resolution (x16), below it the
            x8 map already is (about) full resolution and a 1x1 convolution takes its place.
    """

    def __init__(
        self, embed_dim: int, out_channels: int, widths: Sequence[int] = (256, 128, 64, 32, 16), patch_size: int = 16
    ) -> None:
        super().__init__()
        w0, w1, w2, w3, w4 = widths
        self.bottom = _conv(embed_dim, w0)
        # Skip paths: level 3 -> x2, level 2 -> x4, level 1 -> x8 grid resolution.
        self.skips = nn.ModuleList([_up(embed_dim, w1, 1), _up(embed_dim, w2, 2), _up(embed_dim, w3, 3)])
        self.ups = nn.ModuleList([nn.ConvTranspose2d(a, b, 2, stride=2) for a, b in ((w0, w1), (w1, w2), (w2, w3))])
        self.fuse = nn.ModuleList([_conv(2 * w, w) for w in (w1, w2, w3)])
        self.up_last = nn.ConvTranspose2d(w3, w4, 2, stride=2) if patch_size >= 12 else nn.Conv2d(w3, w4, 1)
        self.image_skip = nn.Sequential(_conv(3, w4), _conv(w4, w4))  # full-resolution detail (thin vessels)
        self.fuse_last = _conv(2 * w4, w4)
        self.head = nn.Conv2d(w4, out_channels, 1)

    def forward(self, feats: list[Tensor], image: Tensor) -> Tensor:
        """feats: 4 maps ``[B, D, h, w]`` (shallow to deep); image ``[B, 3, H, W]`` -> ``[B, K, H, W]``."""
        x = self.bottom(feats[3])
        for up, skip, fuse, f in zip(self.ups, self.skips, self.fuse, (feats[2], feats[1], feats[0])):
            x = fuse(torch.cat([up(x), skip(f)], dim=1))
        x = self.up_last(x)
        if x.shape[-2:] != image.shape[-2:]:  # patch 14 or 8 (or odd sizes): grid * 16 != H
            x = F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)
        x = self.fuse_last(torch.cat([x, self.image_skip(image)], dim=1))
        return self.head(x)


class LinearDecoder(nn.Module):
    """Light decoder: concatenated levels -> BatchNorm -> 1x1 conv, bilinearly upsampled to the input size."""

    def __init__(self, embed_dim: int, out_channels: int, levels: int = 4) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(embed_dim * levels)
        self.head = nn.Conv2d(embed_dim * levels, out_channels, 1)

    def forward(self, feats: list[Tensor], image: Tensor) -> Tensor:
        """feats: maps ``[B, D, h, w]``; image ``[B, 3, H, W]`` -> ``[B, K, H, W]``."""
        x = self.head(self.bn(torch.cat(feats, dim=1)))
        return F.interpolate(x, size=image.shape[-2:], mode="bilinear", align_corners=False)


class EncoderDense(nn.Module):
    """A ViT encoder plus a dense decoder; the encoder is frozen (no grad, eval mode) unless ``finetune``.

    Args:
        encoder: :class:`visionfm.models.VisionTransformer`.
        decoder: "unetr" or "linear".
        out_channels: K.
        finetune: train the encoder too.
    """

    def __init__(self, encoder: nn.Module, decoder: str, out_channels: int, finetune: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.finetune = finetune
        self.blocks = block_indices(len(encoder.blocks))
        dim = encoder.cfg.embed_dim
        if decoder == "unetr":
            self.decoder = UNETRDecoder(dim, out_channels, patch_size=encoder.cfg.patch_size)
        elif decoder == "linear":
            self.decoder = LinearDecoder(dim, out_channels, len(self.blocks))
        else:
            raise ValueError(f"unknown decoder {decoder!r}; valid: linear, unetr")
        self.encoder.requires_grad_(finetune)
        self.encoder_dtype: torch.dtype | None = None  # bf16: the frozen encoder's matmuls on AMX / tensor cores

    def train(self, mode: bool = True) -> EncoderDense:
        super().train(mode)
        if not self.finetune:
            self.encoder.eval()  # frozen: keep drop-path off whatever the trainer asks
        return self

    def features(self, x: Tensor) -> list[Tensor]:
        """The four levels ``[B, D, h, w]``, computed once per input.

        Why a frozen encoder costs no backward: its forward runs without autograd (no graph, no saved activations),
        so a training step is one encoder forward plus the decoder's forward and backward. ``encoder_dtype``
        bf16 runs that forward under autocast (float32 features come out for the decoder).
        """
        grad = self.finetune and torch.is_grad_enabled()
        dtype = self.encoder_dtype
        cast = torch.autocast(x.device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()
        with torch.set_grad_enabled(grad), cast:  # no inner autocast otherwise: the loop's precision applies
            feats, _ = multilevel_features(self.encoder, x, self.blocks)
        return [f.float() for f in feats]

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` -> logits ``[B, K, H, W]``."""
        return self.decoder(self.features(x), x)


class MonaiUNet(nn.Module):
    """MONAI's 2-D U-Net baseline (5 levels, residual units); input sides must be multiples of 16.

    Args:
        out_channels: K.
        channels: widths of the 5 levels, full resolution first.
        in_channels: C of the input ``[B, C, H, W]`` (3, or more for stacked contrast views).
    """

    def __init__(
        self, out_channels: int, channels: Sequence[int] = (16, 32, 64, 128, 256), in_channels: int = 3
    ) -> None:
        super().__init__()
        from monai.networks.nets import UNet  # lazy: MONAI import is slow

        self.net = UNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=out_channels,
            channels=tuple(channels),
            strides=(2,) * (len(channels) - 1),
            num_res_units=2,
        )

    def forward(self, x: Tensor) -> Tensor:
        """``[B, C, H, W]`` -> ``[B, K, H, W]``."""
        return self.net(x)


def _rgb_only(in_channels: int) -> None:
    if in_channels != 3:
        raise ValueError(f"the ViT decoders take RGB input (3 channels), not {in_channels}; use the U-Net (--unet)")


@DENSE_MODELS.register("unetr")
def _unetr(
    encoder: nn.Module | None, out_channels: int, finetune: bool = False, in_channels: int = 3, width: int = 16
) -> nn.Module:
    _rgb_only(in_channels)
    return EncoderDense(_need(encoder), "unetr", out_channels, finetune)


@DENSE_MODELS.register("linear")
def _linear(
    encoder: nn.Module | None, out_channels: int, finetune: bool = False, in_channels: int = 3, width: int = 16
) -> nn.Module:
    _rgb_only(in_channels)
    return EncoderDense(_need(encoder), "linear", out_channels, finetune)


@DENSE_MODELS.register("unet")
def _unet(
    encoder: nn.Module | None, out_channels: int, finetune: bool = False, in_channels: int = 3, width: int = 16
) -> nn.Module:
    return MonaiUNet(out_channels, tuple(width * 2**i for i in range(5)), in_channels)


def _need(encoder: nn.Module | None) -> nn.Module:
    if encoder is None:
        raise ValueError("this decoder needs encoder weights (--weights); use --unet for the U-Net baseline")
    return encoder


def build_dense_model(
    name: str,
    encoder: nn.Module | None,
    out_channels: int,
    finetune: bool = False,
    in_channels: int = 3,
    width: int = 16,
) -> nn.Module:
    """Build a registered dense model ("unetr", "linear", "unet") with ``out_channels`` outputs.

    ``in_channels`` (U-Net only; the ViT decoders take RGB) and ``width`` (the U-Net's first-level channels).
    """
    return DENSE_MODELS.get(name)(encoder, out_channels, finetune, in_channels=in_channels, width=width)
