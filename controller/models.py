r"""Late-fusion models with per-modality encoders, unimodal heads and a linear fusion head.

For M views x_1..x_M the model computes

    f_m = encoder_m(x_m)                                   (features, N × d_m)
    z_m = head_m(f_m)                                      (unimodal logits)
    z   = W [f_1; …; f_M] + b = Σ_m W_m f_m + b            (fused logits)

where W = [W_1 … W_M] is split by columns, so W_m f_m is modality m's share of the
fused logits (what OGM-GE scores, with b/M of the bias each).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MultimodalNet(nn.Module):
    """Late fusion: ``forward(views) -> (fused logits z, [z_1..z_M], [f_1..f_M])``.

    Args:
        encoders: one module per view, x_m (N, ·) -> f_m (N, d_m).
        heads: one module per view, f_m -> unimodal logits z_m (N, C).
        fusion: ``nn.Linear(Σ d_m, C)`` on the concatenated features.
    """

    def __init__(self, encoders: nn.ModuleList, heads: nn.ModuleList, fusion: nn.Linear):
        super().__init__()
        if len(encoders) < 2:
            raise ValueError(f"a multimodal net needs at least 2 encoders, got {len(encoders)}")
        if len(heads) != len(encoders):
            raise ValueError(f"one head per encoder: got {len(encoders)} encoders and {len(heads)} heads")
        if not isinstance(fusion, nn.Linear):
            raise TypeError(f"fusion must be an nn.Linear on the concatenated features, got {type(fusion).__name__}")
        self.encoders = nn.ModuleList(encoders)
        self.heads = nn.ModuleList(heads)
        self.fusion = fusion

    @property
    def n_modalities(self) -> int:
        return len(self.encoders)

    def branches(self) -> list[nn.Module]:
        """Modality m's unimodal model (encoder_m and head_m, sharing their parameters)."""
        return [nn.ModuleDict({"encoder": encoder, "head": head}) for encoder, head in zip(self.encoders, self.heads)]

    def encode(self, views: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Features f_m = encoder_m(x_m) of every view."""
        if len(views) != self.n_modalities:
            raise ValueError(f"expected {self.n_modalities} views, got {len(views)}")
        return [encoder(view) for encoder, view in zip(self.encoders, views)]

    def forward(self, views: Sequence[torch.Tensor]):
        features = self.encode(views)
        unimodal = [head(f) for head, f in zip(self.heads, features)]
        fused = self.fusion(torch.cat(features, dim=1))
        return fused, unimodal, features

    def fusion_contributions(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Each modality's share of the fused logits, W_m f_m + b/M (Σ_m of them = z)."""
        blocks = torch.split(self.fusion.weight, [f.shape[1] for f in features], dim=1)
        bias = 0.0 if self.fusion.bias is None else self.fusion.bias / len(features)
        return [f @ block.T + bias for f, block in zip(features, blocks)]


def mlp_net(view_dims: Sequence[int], n_classes: int, *, hidden: int = 64, feature_dim: int = 32) -> MultimodalNet:
    """Encoders x_m -> ReLU(Linear) -> ReLU(Linear) of width ``hidden`` then ``feature_dim``;
    linear heads and a linear fusion head on the concatenated features."""
    if n_classes < 2:
        raise ValueError(f"n_classes must be at least 2, got {n_classes}")
    encoders = nn.ModuleList(
        nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, feature_dim), nn.ReLU()) for dim in view_dims
    )
    heads = nn.ModuleList(nn.Linear(feature_dim, n_classes) for _ in view_dims)
    return MultimodalNet(encoders, heads, nn.Linear(feature_dim * len(view_dims), n_classes))
