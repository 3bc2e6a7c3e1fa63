"""LERF's relevancy score, as LangSplat uses it.

relevancy(f, q) = min_i softmax(T * [cos(f, q), cos(f, c_i)])[0] over canonical phrases c_i
("object", "things", "stuff", "texture"), T = 10. Equivalently min_i sigmoid(T * (cos(f,q) - cos(f,c_i))).
"""

from __future__ import annotations

import torch

DEFAULT_TEMPERATURE = 10.0


def relevancy(
    features: torch.Tensor, query: torch.Tensor, canonical: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE
) -> torch.Tensor:
    """features (N, D) unit rows; query (D,) unit; canonical (C, D) unit rows -> (N,) relevancy in (0, 1).

    Features that are all-zero (no mask ever seen) score against cos = 0 for every phrase, i.e. 0.5; callers
    that know which rows are empty should mask them out.
    """
    if features.ndim != 2 or query.ndim != 1 or canonical.ndim != 2:
        raise ValueError(
            f"shapes must be (N,D), (D,), (C,D); got {tuple(features.shape)}, {tuple(query.shape)}, "
            f"{tuple(canonical.shape)}"
        )
    if features.shape[1] != query.shape[0] or canonical.shape[1] != query.shape[0]:
        raise ValueError(
            f"feature dims differ: features {features.shape[1]}, query {query.shape[0]}, canonical {canonical.shape[1]}"
        )
    f = features.float()
    cos_q = f @ query.float()  # (N,)
    cos_c = f @ canonical.float().T  # (N, C)
    return torch.sigmoid(temperature * (cos_q[:, None] - cos_c)).min(dim=1).values
