"""The Foundry student's compression modules: DSO, the static baselines, Foundry-Gate and CAU.

Foundry (arXiv 2511.20721) takes DSO and CAU from 3DLST (arXiv 2405.15826):
- DSO: s learnable SuperTokens S; Q = S W_Q, K = T W_K, V = T W_V; every token j goes to exactly one
  SuperToken, argmax_k (q_k . k_j) / sqrt(d) (straight-through Gumbel-softmax while training); the
  SuperToken becomes the mean of the values assigned to it.
- CAU: Y_hat = MLP(T + CAM . S_enc): each token gets back the encoder output of its SuperToken plus a
  residual of its own token, then an MLP to the teacher's width.

Choices the paper leaves open (docs/platform-notes.md, "Open choices in the Foundry paper"):
- An empty SuperToken (no token assigned) keeps its learned embedding S_k, at the origin (the cloud's
  centroid after normalisation): a defined value, no division by zero.
- Ties in the assignment go to the lowest SuperToken index (ArgMax semantics), so each token has
  exactly one SuperToken in PyTorch, ONNX Runtime and TensorRT alike.
- Foundry-Gate with static shapes: at most `gate_budget` tokens bypass DSO: the ones with the lowest
  fusion probability, and only if that probability is <= `gate_threshold`. Unused bypass slots are
  masked out of the encoder's attention.

Export notes: the one-hot is ArgMax + Equal against an arange (no OneHot op: missing on TensorRT 8.5),
grouped means and the CAU routing are MatMuls with the one-hot.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from foundry_edge.models.grouping import farthest_point_sample, gather_points, square_distance


def one_hot_argmax(scores: torch.Tensor) -> torch.Tensor:
    """(B, c, s) scores -> (B, c, s) float one-hot of the argmax (ties: lowest index)."""
    index = scores.argmax(dim=-1, keepdim=True)
    slots = torch.arange(scores.shape[-1], device=scores.device)
    return (index == slots).to(scores.dtype)


def grouped_mean(one_hot: torch.Tensor, values: torch.Tensor, empty: torch.Tensor) -> torch.Tensor:
    """(B, c, s) one-hot, (B, c, C) values, (s, C) or (B, s, C) fallback -> (B, s, C) means.

    A slot with no member takes `empty` instead of dividing by zero.
    """
    sums = torch.matmul(one_hot.transpose(1, 2), values)
    counts = one_hot.sum(dim=1).unsqueeze(-1)  # (B, s, 1)
    means = sums / counts.clamp_min(1.0)
    return torch.where(counts > 0, means, empty.to(means.dtype).expand_as(means))


class DynamicSupertokens(nn.Module):
    """DSO: learned hard assignment of c tokens to s SuperTokens by cross-attention.

    `logits="dot"` is the paper's (q_k . k_j) / sqrt(d). It collapsed: the tokenizer's keys share one
    large direction (a per-cloud mean of norm ~13 against ~4.6 of variation on the first bundled
    student), so q_k . mean(k) decides the argmax for every token alike, and Gumbel noise at tau 1
    (std ~1.3) drowned the token-dependent part (~0.4) while training. "centered-cosine" removes the
    per-cloud mean key and the mean query (the queries share W_q's bias: uncentred, their directions
    agreed to cosine 0.998 and top-1/top-2 margins were ~0.01), compares directions only and learns the
    scale (CLIP's logit scale), so the argmax depends on what differs between tokens and SuperTokens.

    Training draws the assignment with straight-through Gumbel-softmax at `tau` while `noise` is on,
    or takes the noise-free argmax with a softmax(logits / tau) gradient when it is off: the schedule
    (training/distill.py) anneals tau and ends noise-free, so training ends on inference's assignment.
    """

    def __init__(self, dim: int, num_supertokens: int, tau: float = 1.0, logits: str = "centered-cosine"):
        super().__init__()
        self.supertokens = nn.Parameter(torch.empty(num_supertokens, dim))
        nn.init.trunc_normal_(self.supertokens, std=0.02)
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.scale = dim ** -0.5
        self.mode = logits
        if logits == "centered-cosine":
            self.logit_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.tau = tau
        self.noise = True

    def logits(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, c, C) -> (B, c, s) assignment logits."""
        keys, queries = self.k(tokens), self.q(self.supertokens)
        if self.mode == "dot":
            return torch.matmul(keys, queries.t()) * self.scale
        keys = F.normalize(keys - keys.mean(dim=1, keepdim=True), dim=-1)
        queries = F.normalize(queries - queries.mean(dim=0, keepdim=True), dim=-1)
        scale = self.logit_scale.clamp(max=math.log(100.0)).exp()
        return torch.matmul(keys, queries.t()) * scale

    def forward(self, tokens: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B, c, s) one-hot routing, (B, c, s) logits."""
        logits = self.logits(tokens)
        if not self.training:
            return one_hot_argmax(logits), logits
        if self.noise:
            return F.gumbel_softmax(logits, tau=self.tau, hard=True, dim=-1), logits
        soft = torch.softmax(logits / self.tau, dim=-1)
        return one_hot_argmax(logits) - soft.detach() + soft, logits


def top2_margin(logits: torch.Tensor) -> torch.Tensor:
    """(B, c, s) logits -> (B, c) top-1 minus top-2: how near a token is to flipping SuperToken."""
    if logits.shape[-1] < 2:
        return torch.full_like(logits[..., 0], float("inf"))
    top = torch.topk(logits, 2, dim=-1).values
    return top[..., 0] - top[..., 1]


class StaticGrouping(nn.Module):
    """The paper's ablation baselines: SuperTokens from the token centres, not learned.

    "fps": s seeds by farthest point sampling of the centres, each token to its nearest seed.
    "kmeans": the same seeds refined by a fixed number of Lloyd iterations (fixed for export).
    """

    def __init__(self, dim: int, num_supertokens: int, method: str, iters: int = 4):
        super().__init__()
        self.num_supertokens, self.method, self.iters = num_supertokens, method, iters
        self.supertokens = nn.Parameter(torch.zeros(num_supertokens, dim))  # empty-slot fallback
        self.v = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, centers: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (B, c, s) one-hot routing, (B, c, s) logits (negative squared distance to each seed)."""
        seeds = gather_points(centers, farthest_point_sample(centers, self.num_supertokens))
        one_hot = one_hot_argmax(-square_distance(centers, seeds))
        if self.method == "kmeans":
            for _ in range(self.iters):
                seeds = grouped_mean(one_hot, centers, seeds)
                one_hot = one_hot_argmax(-square_distance(centers, seeds))
        return one_hot.detach(), -square_distance(centers, seeds).detach()


class FusionGate(nn.Module):
    """Foundry-Gate: a 2-layer MLP giving each token its probability of being fused by DSO."""

    def __init__(self, dim: int, hidden: int, threshold: float, budget: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, 1)
        self.threshold, self.budget = threshold, budget

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, c, C) -> (B, c) fusion probability pi."""
        return torch.sigmoid(self.fc2(F.gelu(self.fc1(tokens)))).squeeze(-1)

    def bypass_slots(self, prob: torch.Tensor) -> torch.Tensor:
        """(B, c) pi -> (B, c, budget) one-hot of the tokens that bypass DSO, one per slot.

        The `budget` tokens with the lowest pi fill the slots (TopK with a constant K); a slot whose
        token has pi > threshold stays empty (an all-zero column).
        """
        low_prob, index = torch.topk(prob, self.budget, dim=-1, largest=False, sorted=True)
        tokens = torch.arange(prob.shape[1], device=prob.device)
        slots = (index.unsqueeze(1) == tokens[None, :, None]).to(prob.dtype)  # (B, c, b)
        valid = (low_prob <= self.threshold).to(prob.dtype)
        return slots * valid.unsqueeze(1)


class CrossAttentionUpsampling(nn.Module):
    """CAU: (B, c, C) tokens + (B, c, L) routing + (B, L, C) encoded -> (B, c, D) reconstruction."""

    def __init__(self, dim: int, hidden: int, out_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, out_dim)

    def forward(self, tokens: torch.Tensor, routing: torch.Tensor, encoded: torch.Tensor) -> torch.Tensor:
        x = tokens + torch.matmul(routing, encoded)
        return self.fc2(self.act(self.fc1(self.norm(x))))


def straight_through(weight: torch.Tensor) -> torch.Tensor:
    """1 in the forward pass, d(weight) in the backward pass: lets the gate learn from the loss."""
    return weight / weight.detach().clamp_min(1e-6)
