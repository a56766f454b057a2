"""DenseCL's dense contrastive loss: InfoNCE at every cell, positives matched by feature similarity.

Wang, Zhang, Shen, Kong, Li, "Dense Contrastive Learning for Self-Supervised Visual
Pre-Training", CVPR 2021. Each of the S_q cells r_s of a query view's dense projection is
contrasted with one positive key cell t_+ and K negatives t_k (equation 2):

    L_r = 1/S_q sum_s -log( exp(r_s.t_+ / tau) / (exp(r_s.t_+ / tau) + sum_k exp(r_s.t_k / tau)) )

The positive of query cell i is the key cell j that is most similar in the *backbone* feature maps
f and f' (equation 3: c_i = argmax_j sim(f_i, f'_j), cosine similarity), not in the projected
ones; the negatives are a queue holding one pooled dense key per earlier key image. The method
adds it to MoCo's global loss as (1 - lambda) L_q + lambda L_r (equation 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sslvision.losses.infonce import info_nce
from sslvision.nn.precision import at_least_float32


@torch.no_grad()
def match_cells(query_features: Tensor, key_features: Tensor) -> Tensor:
    """For each query cell, the index of the most similar key cell (eq. 3): (N, S_q) int64.

    Both are backbone feature maps of the same images, (N, C, h_q, w_q) and (N, C, h_k, w_k);
    cells are counted row-major. The matching carries no gradient.

    >>> keys = torch.eye(3).reshape(1, 3, 1, 3)  # key cells e0, e1, e2
    >>> queries = torch.eye(3)[:, [2, 0, 1]].reshape(1, 3, 1, 3)  # query cells e2, e0, e1
    >>> match_cells(queries, keys).tolist()
    [[2, 0, 1]]
    """
    if query_features.shape[:2] != key_features.shape[:2]:
        raise ValueError(
            f"DenseCL matches feature maps of the same batch and channels, got "
            f"{tuple(query_features.shape)} and {tuple(key_features.shape)}"
        )
    q = F.normalize(at_least_float32(query_features.flatten(2)), dim=1)
    k = F.normalize(at_least_float32(key_features.flatten(2)), dim=1)
    return torch.bmm(q.transpose(1, 2), k).argmax(dim=2)


def dense_info_nce(
    dense_query: Tensor,
    dense_key: Tensor,
    match: Tensor,
    negatives: Tensor,
    temperature: float,
) -> Tensor:
    """Equation 2 averaged over every query cell of every image.

    ``dense_query`` (N, D, h_q, w_q) is the online dense projection, ``dense_key``
    (N, D, h_k, w_k) the momentum one, ``match`` (N, S_q) the key cell of each query cell (from
    :func:`match_cells`) and ``negatives`` the (K, D) queue of L2-normalised pooled dense keys.
    Cells are normalised here; keys and negatives receive no gradient.

    >>> q = torch.randn(2, 8, 2, 2)
    >>> queue = torch.nn.functional.normalize(torch.randn(16, 8), dim=1)
    >>> same = torch.arange(4).expand(2, 4)  # query cell i matches key cell i
    >>> aligned = dense_info_nce(q, q, same, queue, 0.2)
    >>> bool(aligned < dense_info_nce(q, -q, same, queue, 0.2))
    True
    """
    n, d = dense_query.shape[:2]
    if dense_key.shape[:2] != (n, d) or match.shape != (n, dense_query[0, 0].numel()):
        raise ValueError(
            f"dense InfoNCE needs keys (N, D, ...) like the queries {tuple(dense_query.shape)} and "
            f"one match per query cell, got keys {tuple(dense_key.shape)} and match "
            f"{tuple(match.shape)}"
        )
    queries = dense_query.flatten(2)  # (N, D, S_q)
    keys = dense_key.detach().flatten(2)  # (N, D, S_k)
    positives = torch.gather(keys, 2, match[:, None, :].expand(-1, d, -1))  # (N, D, S_q)
    # One row per query cell: InfoNCE's mean over the rows is the mean over cells and images.
    return info_nce(
        queries.transpose(1, 2).reshape(-1, d),
        positives.transpose(1, 2).reshape(-1, d),
        negatives,
        temperature,
    )
