"""SwAV: online codes by Sinkhorn-Knopp and the swapped prediction loss.

Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, "Unsupervised Learning of Visual Features by
Contrasting Cluster Assignments", NeurIPS 2020.

Codes (sec. 3.1, eq. 3). The codes Q of a batch of B features Z against K prototypes C solve the
entropy-regularised transport problem

    max_{Q in Q} Tr(Q^T C^T Z) + eps H(Q),  Q = {Q >= 0 : Q 1_B = 1_K / K, Q^T 1_K = 1_B / B}

whose solution is Q* = Diag(u) exp(C^T Z / eps) Diag(v): every prototype receives an equal share of
the batch, which is what prevents the collapse to one cluster. The vectors u, v are approached by a
few Sinkhorn-Knopp iterations (3 in the paper), alternately normalising the rows (prototypes) and
the columns (samples) of exp(C^T Z / eps). With several processes the batch is the global one: the
sums over samples are all-reduced, each process keeping the columns of its own samples.

Loss (sec. 3.1, eq. 1-2). The code of one view is predicted from the features of another,

    l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k),  p_t^(k) = softmax_k(z_t^T c_k / tau),

summed over the swapped pairs, and with multi-crop (sec. 3.2) the codes of the global crops only
are predicted from every other crop. The normalisation (mean over the batch, over the other crops
and over the code crops) follows the authors' ``main_swav.py``; it rescales the paper's sums.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from sslvision.nn.distributed import is_distributed
from sslvision.nn.precision import at_least_float32


def _all_reduce(x: Tensor, op: dist.ReduceOp.RedOpType = dist.ReduceOp.SUM) -> Tensor:
    """All-reduce ``x`` in place across processes; the identity with one process."""
    if is_distributed():
        dist.all_reduce(x, op=op)
    return x


def _check_positive(name: str, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


@torch.no_grad()
def sinkhorn_knopp(scores: Tensor, epsilon: float = 0.05, iterations: int = 3) -> Tensor:
    """SwAV codes (B, K) of this process's B samples: rows sum to 1, prototypes share the batch.

    ``scores`` (B, K) are the prototype scores ``z^T c_k`` of the local samples (a queue's rows
    included, if the caller prepends them); they are detached. The iterations run in float64,
    outside any autocast, because exp(scores / eps) spans many orders of magnitude for the small
    eps of the paper (e^40 for cosine scores at eps = 0.05, beyond float16 and bfloat16 precision
    and range) and its sums run over a whole global batch or queue; the codes come back in
    float32.

    The global maximum of ``scores / eps`` is subtracted before the exponential so that nothing
    overflows: that multiplies the whole matrix by one constant, which the first normalisation
    (by the global sum) removes, so the codes are unchanged. What float64 cannot hold is a
    prototype (or sample) whose every score lies more than about 700 eps below that maximum: its
    entries all underflow to 0 and its codes become NaN. Cosine scores span at most 2, so that
    takes eps < 0.003.

    With several processes the sums over samples (the total and the per-prototype sums) are
    all-reduced and B is the global batch size (local sizes may differ), so each process gets its
    rows of the codes of the global batch. Every process must then call this function (a
    collective), with the same ``iterations``.

    >>> codes = sinkhorn_knopp(0.1 * torch.randn(6, 4))
    >>> codes.shape, codes.dtype
    (torch.Size([6, 4]), torch.float32)
    >>> bool(torch.allclose(codes.sum(dim=1), torch.ones(6)))
    True
    """
    if scores.dim() != 2:
        raise ValueError(f"Sinkhorn-Knopp needs scores of shape (B, K), got {tuple(scores.shape)}")
    _check_positive("epsilon", epsilon)
    if iterations < 1:
        raise ValueError(f"Sinkhorn-Knopp needs at least one iteration, got {iterations}")
    num_prototypes = scores.shape[1]
    with torch.autocast(device_type=scores.device.type, enabled=False):
        logits = scores.detach().to(torch.float64) / epsilon
        peak = _all_reduce(logits.max(), dist.ReduceOp.MAX)
        q = torch.exp(logits - peak).T  # (K, B): the paper's layout, a view
        # One collective for both sums: the total mass and the global number of samples.
        totals = _all_reduce(torch.stack([q.sum(), q.new_tensor(q.shape[1])]))
        total_mass, num_samples = totals[0], totals[1]
        q = q / total_mass
        for _ in range(iterations):
            # Each prototype (row) gets mass 1 / K of the global batch ...
            q /= _all_reduce(q.sum(dim=1, keepdim=True))
            q /= num_prototypes
            # ... and each sample (column, all local) mass 1 / B.
            q /= q.sum(dim=0, keepdim=True)
            q /= num_samples
        q *= num_samples  # every sample's codes now sum to 1: a soft assignment
        return q.T.to(torch.float32, memory_format=torch.contiguous_format)


def swapped_prediction_loss(
    scores: Sequence[Tensor], codes: Sequence[Tensor], temperature: float = 0.1
) -> Tensor:
    """SwAV's multi-crop swapped prediction loss: each code crop predicted from every other crop.

    ``scores[v]`` (B, K) are the prototype scores of crop ``v``, the code crops (global crops)
    first; ``codes[i]`` (B, K) are the codes of crop ``i`` (from :func:`sinkhorn_knopp`), for the
    first ``len(codes)`` crops. The loss is

        1 / len(codes) sum_i 1 / (V - 1) sum_{v != i} -mean_b sum_k codes[i][b, k] log p_v[b, k]

    with V = ``len(scores)`` and p_v = softmax(scores[v] / temperature). Codes are targets: no
    gradient reaches them. Computed in at least float32.

    >>> scores, codes = [torch.zeros(4, 8)] * 3, [torch.full((4, 8), 1 / 8)] * 2
    >>> loss = swapped_prediction_loss(scores, codes)  # uniform prediction of uniform codes
    >>> bool(torch.isclose(loss, torch.log(torch.tensor(8.0))))
    True
    """
    _check_positive("temperature", temperature)
    num_crops = len(scores)
    if num_crops < 2:
        raise ValueError(f"the swapped prediction needs at least 2 crops, got {num_crops}")
    if not 1 <= len(codes) <= num_crops:
        raise ValueError(
            f"the swapped prediction needs codes for 1 to {num_crops} crops, got {len(codes)}"
        )
    shape = scores[0].shape
    for name, tensors in (("scores", scores), ("codes", codes)):
        for index, tensor in enumerate(tensors):
            if tensor.dim() != 2 or tensor.shape != shape:
                raise ValueError(
                    f"{name}[{index}] has shape {tuple(tensor.shape)}, expected the shape "
                    f"{tuple(shape)} of scores[0] (B, K)"
                )
    log_probs = [F.log_softmax(at_least_float32(s) / temperature, dim=1) for s in scores]
    loss = log_probs[0].new_zeros(())
    for i, code in enumerate(codes):
        target = code.detach()
        cross_entropies = [
            -(target.to(log_probs[v].dtype) * log_probs[v]).sum(dim=1).mean()
            for v in range(num_crops)
            if v != i
        ]
        loss = loss + torch.stack(cross_entropies).sum() / (num_crops - 1)
    return loss / len(codes)


class SwAVLoss(nn.Module):
    """Codes of the first crops by :func:`sinkhorn_knopp`, then :func:`swapped_prediction_loss`.

    A convenience for the plain case; a method with a queue computes the codes itself (on the
    queue's scores and the batch's) and calls :func:`swapped_prediction_loss`.
    """

    def __init__(
        self, temperature: float = 0.1, epsilon: float = 0.05, iterations: int = 3
    ) -> None:
        super().__init__()
        _check_positive("temperature", temperature)
        _check_positive("epsilon", epsilon)
        if iterations < 1:
            raise ValueError(f"Sinkhorn-Knopp needs at least one iteration, got {iterations}")
        self.temperature = temperature
        self.epsilon = epsilon
        self.iterations = iterations

    def forward(self, scores: list[Tensor], num_code_crops: int = 2) -> Tensor:
        if not 1 <= num_code_crops <= len(scores):
            raise ValueError(
                f"num_code_crops must be between 1 and the {len(scores)} crops, got "
                f"{num_code_crops}"
            )
        codes = [
            sinkhorn_knopp(s.detach(), self.epsilon, self.iterations)
            for s in scores[:num_code_crops]
        ]
        return swapped_prediction_loss(scores, codes, self.temperature)

    def extra_repr(self) -> str:
        return (
            f"temperature={self.temperature}, epsilon={self.epsilon}, iterations={self.iterations}"
        )
