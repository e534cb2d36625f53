"""From a verifier's raw scores to P(correct): the calibration fitted on the calibration split.

- `platt` (the classifier, and the generative verifier's `verdict` score): P = sigmoid(score / T + b).
- `answer_confidence` (the generative verifier's `answer` score): two raw numbers per row, the log-likelihood ll
  (<= 0) the verifier gives the response's answer right after its own solution, and its confidence in that solution
  c (<= 0: the lowest log-probability among the tokens it wrote). P = sigmoid(w . [a, c, a * c] + b) with
  a = -log(eps - ll). Why both, measured on the embedded base (docs/verifier.md): the log scale, because right
  answers sit at ll > -0.01 while near misses (32 against its own 33) reach -0.2, which sigmoid(ll / T + b) cannot
  separate from a long tail down to -30 (ECE 0.088 -> 0.034); the confidence, because on the 10% of questions the
  verifier solves wrong, agreeing with it means being wrong (ROC-AUC 0.34 there on ll alone), and its own solution is
  then much less sure of itself (ROC-AUC 0.93 for telling solved from not), so the interaction trusts the comparison
  only as far as the verifier trusts its solution (ROC-AUC 0.948 -> 0.968).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("platt", "answer_confidence")
EPS = 1e-4  # log-likelihoods closer to 0 than this are all "certain"
L2 = 1e-3  # keeps the weights finite on separable calibration data


@dataclass(frozen=True)
class Calibration:
    kind: str  # one of KINDS
    weights: tuple[float, ...]
    bias: float

    def features(self, raw: torch.Tensor) -> torch.Tensor:
        return features(self.kind, raw)

    def probabilities(self, raw: torch.Tensor) -> torch.Tensor:
        """P(correct) of every row of `raw` ((N,) or (N, k) raw scores)."""
        return torch.sigmoid(self.features(raw) @ torch.tensor(self.weights) + self.bias)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "weights": list(self.weights), "bias": self.bias}

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if data.get("kind") not in KINDS:
            raise ValueError(f"unknown calibration {data.get('kind')!r}; expected one of {', '.join(KINDS)}")
        return cls(data["kind"], tuple(float(w) for w in data["weights"]), float(data["bias"]))

    @classmethod
    def platt(cls, temperature: float, bias: float) -> Calibration:
        return cls("platt", (1 / temperature,), bias)


def features(kind: str, raw: torch.Tensor) -> torch.Tensor:
    """(N, k) features of (N,) or (N, r) raw scores: the score itself (`platt`), or [a, c, a * c] (see above)."""
    raw = raw.float().reshape(len(raw), -1)
    if kind == "platt":
        return raw[:, :1]
    if kind != "answer_confidence":
        raise ValueError(f"unknown calibration {kind!r}; expected one of {', '.join(KINDS)}")
    a = -torch.log(EPS - raw[:, 0].clamp(max=0.0))
    c = raw[:, 1].clamp(max=0.0)
    return torch.stack([a, c, a * c], dim=1)


def fit_calibration(
    logits: torch.Tensor, labels: torch.Tensor, biases: torch.Tensor | None = None
) -> tuple[float, float]:
    """(T, b) minimising the binary cross-entropy of sigmoid(logit / T + b): Platt scaling, as a grid search over
    log T in [-2.5, 2.5] and b in [-10, 10] (bounded, so separable data cannot send T to 0). The bias corrects a
    verifier that leans to one verdict, which a temperature alone cannot (ECE 0.064 -> 0.039 on a `verdict` one)."""
    biases = torch.linspace(-10, 10, 401) if biases is None else biases
    best, best_loss = (1.0, 0.0), math.inf
    # one (biases x rows) matrix at a time: bounded memory
    for t in torch.exp(torch.linspace(-2.5, 2.5, 201)).tolist():
        z = logits[None, :] / t + biases[:, None]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(z, labels.expand_as(z), reduction="none").mean(-1)
        k = int(torch.argmin(loss))
        if loss[k] < best_loss:
            best, best_loss = (t, float(biases[k])), float(loss[k])
    return best


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """The T > 0 minimising the binary cross-entropy of sigmoid(logit / T) (a 1-D search over log T)."""
    return fit_calibration(logits, labels, biases=torch.zeros(1))[0]


def fit(kind: str, raw: torch.Tensor, labels: torch.Tensor) -> Calibration:
    """The calibration of `kind` that minimises the binary cross-entropy on (raw, labels): Platt's grid search, or a
    logistic regression (L-BFGS, a small L2 penalty) on the `answer_confidence` features."""
    if kind == "platt":
        return Calibration.platt(*fit_calibration(features(kind, raw)[:, 0], labels.float()))
    x, y = features(kind, raw), labels.float()
    w = torch.zeros(x.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros((), dtype=torch.float64, requires_grad=True)
    x64, y64 = x.double(), y.double()
    optimizer = torch.optim.LBFGS([w, b], max_iter=500, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(x64 @ w + b, y64) + L2 * (w**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return Calibration(kind, tuple(float(v) for v in w.detach()), float(b.detach()))
