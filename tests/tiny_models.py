"""Small models the tests build the same way in several places.

Importable from any test because tests/conftest.py puts this folder on ``sys.path``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

#: Reduced GigaTIME widths: 64-px windows run in milliseconds.
TINY_FILTERS = (4, 8, 16, 32, 64)


def save_tiny_gigatime(path: Path, *, seed: int, bias: tuple[float, float]) -> Path:
    """A reduced-width GigaTIME (seed ``seed``) taking 64-px windows at 0.5 um/px, saved at
    ``path``; its output biases run linearly over ``bias`` so some channels cross 0.5 and
    others do not."""
    import torch

    from virtime.models import GigaTIME, save

    torch.manual_seed(seed)
    model = GigaTIME(filters=list(TINY_FILTERS)).eval()
    with torch.no_grad():
        model.final.bias.copy_(torch.linspace(*bias, 23))
    save(model, path, input_mpp=0.5, window=64)
    return path


def standardised_gigatime(rgb: np.ndarray) -> Any:
    """A random reduced-width GigaTIME (seed 0) whose logits are standardised per channel on the
    tiles ``rgb`` ``(N, H, W, 3)``, so its probabilities straddle 0.5 and every channel's density
    varies between slides."""
    import torch

    from virtime.models import GigaTIME, to_model_input

    torch.manual_seed(0)
    model = GigaTIME(filters=list(TINY_FILTERS)).eval()
    with torch.no_grad():
        model.final.bias.zero_()
        logits = model(to_model_input(rgb))
        mu, sd = logits.mean(dim=(0, 2, 3)), logits.std(dim=(0, 2, 3))
        model.final.weight.div_(sd.view(-1, 1, 1, 1))
        model.final.bias.copy_(-mu / sd)
    return model


def tiny_flash(seed: int, *, pos_embed_std: float | None = None) -> Any:
    """A reduced-width GigaTIME-Flash (official key pattern) with non-zero LoRA B and layer
    scales so the adapters are exercised; ``pos_embed_std`` also redraws the position table."""
    import torch

    from virtime.models import GigaTIMEFlash

    torch.manual_seed(seed)
    model = GigaTIMEFlash(dim=64, heads=1, mlp_hidden=64, lora_r=4, decoder=(16, 8, 8, 8))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name or name.endswith("gamma"):
                p.normal_(0, 0.1)
            elif pos_embed_std is not None and name.endswith("pos_embed"):
                p.normal_(0, pos_embed_std)
    return model


def tiny_encoders(seed: int, **slide_options: Any) -> tuple[Any, Any]:
    """A small tile encoder (64-d embeddings) and a slide encoder over them, both in eval mode;
    ``slide_options`` change the slide encoder's config (e.g. ``segment_lengths``)."""
    import torch

    from virtime.embed import SlideEncoder, SlideEncoderConfig, TileEncoder, TileEncoderConfig

    torch.manual_seed(seed)
    tile = TileEncoder(TileEncoderConfig(embed_dim=64, depth=1, num_heads=4, mlp_hidden=128))
    slide = SlideEncoder(SlideEncoderConfig(in_chans=64, embed_dim=32, depth=2, num_heads=4,
                                            ffn_dim=48, **slide_options))
    return tile.eval(), slide.eval()
