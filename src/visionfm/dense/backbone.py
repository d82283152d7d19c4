"""Multi-level ViT features for dense decoders, without touching the encoder code.

The official VisionFM segmentation decoder reads the tokens of blocks 3, 5, 7 and 11 (0-based) of a 12-block ViT.
:func:`block_indices` scales that choice to any depth, and :func:`multilevel_features` runs
``encoder.prepare_tokens`` + ``encoder.blocks`` itself (``EncoderOutput.layers`` only holds the *last* n blocks) and
returns the chosen blocks' patch tokens as feature maps.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

__all__ = ["OFFICIAL_BLOCKS", "block_indices", "multilevel_features"]

OFFICIAL_BLOCKS = (3, 5, 7, 11)


def block_indices(depth: int, n: int = 4) -> list[int]:
    """Evenly spaced block indices ending at the last block, matching (3, 5, 7, 11) for depth 12.

    Args:
        depth: number of transformer blocks.
        n: number of levels.

    Returns:
        ``n`` sorted 0-based indices (repeats allowed when ``depth < n``, e.g. ``[0, 0, 1, 1]`` for depth 2).
    """
    if depth < 1 or n < 1:
        raise ValueError(f"depth and n must be >= 1, got depth={depth}, n={n}")
    if depth == 12 and n == 4:
        return list(OFFICIAL_BLOCKS)
    # Official spacing in units of depth: block i sits at (i+1)/12 of the way -> 4/12, 6/12, 8/12, 12/12.
    fractions = [(b + 1) / 12 for b in OFFICIAL_BLOCKS] if n == 4 else [(i + 1) / n for i in range(n)]
    return [max(0, min(depth - 1, round(f * depth) - 1)) for f in fractions]


def multilevel_features(encoder: nn.Module, x: Tensor, blocks: Sequence[int]) -> tuple[list[Tensor], tuple[int, int]]:
    """Run the encoder and collect the normalised patch tokens of chosen blocks as maps.

    Args:
        encoder: a :class:`visionfm.models.VisionTransformer`.
        x: ``[B, 3, H, W]`` normalised images (H, W multiples of the patch size).
        blocks: 0-based block indices (sorted; repeats allowed).

    Returns:
        (list of ``[B, D, H/p, W/p]`` maps in the order of ``blocks``, patch grid (rows, cols)).
    """
    tokens, (rows, cols) = encoder.prepare_tokens(x)
    prefix = encoder.num_prefix_tokens
    wanted = {int(b) for b in blocks}
    last = max(wanted)
    if last >= len(encoder.blocks) or min(wanted) < 0:
        raise ValueError(f"blocks {list(blocks)} outside the encoder's {len(encoder.blocks)} blocks")
    found: dict[int, Tensor] = {}
    for i, blk in enumerate(encoder.blocks[: last + 1]):
        tokens, _ = blk(tokens)
        if i in wanted:
            # The final LayerNorm puts every level on the same scale, as the official decoder does.
            patch = encoder.norm(tokens)[:, prefix:]
            found[i] = patch.transpose(1, 2).reshape(x.shape[0], -1, rows, cols)
    return [found[int(b)] for b in blocks], (rows, cols)
