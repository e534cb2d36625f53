"""The learned verifier's calibration (verifiers/calibration.py): its features by hand, what the answer score's
calibration can tell apart that Platt scaling cannot, and verifier directories written before it."""

from __future__ import annotations

import json
import math

import pytest
import torch


def test_calibration_features_by_hand():
    from maporl.verifiers.calibration import Calibration, features

    raw = torch.tensor([[0.0, 0.0], [-1.0, -2.0], [0.5, 1.0]])  # ll and confidence; above 0 counts as 0
    f = features("answer_confidence", raw)
    a = [-math.log(1e-4), -math.log(1e-4 + 1.0), -math.log(1e-4)]
    want = [[a[0], 0.0, 0.0], [a[1], -2.0, -2.0 * a[1]], [a[2], 0.0, 0.0]]
    assert torch.allclose(f, torch.tensor(want), rtol=1e-5, atol=1e-6)  # float32: log(1 + 1e-4) to 1e-6
    assert features("platt", torch.tensor([1.5, -2.0])).tolist() == [[1.5], [-2.0]]
    c = Calibration("answer_confidence", (1.0, 0.5, 0.0), -2.0)
    assert c.probabilities(raw[:1]).item() == pytest.approx(1 / (1 + math.exp(-(a[0] - 2.0))))
    assert Calibration.from_dict(c.to_dict()) == c
    assert Calibration.platt(2.0, 0.5).probabilities(torch.tensor([3.0])).item() == pytest.approx(
        1 / (1 + math.exp(-(1.5 + 0.5)))
    )
    with pytest.raises(ValueError, match="unknown calibration 'isotonic'"):
        Calibration.from_dict({"kind": "isotonic", "weights": [], "bias": 0})


def test_answer_confidence_trusts_the_comparison_as_far_as_the_verifier_trusts_its_solution():
    """Sure of its own solution (confidence 0): agreeing (ll ~ 0) means right, disagreeing (ll ~ -5) wrong. Unsure
    (confidence -3): agreeing with its own, probably wrong, answer says nothing, half of those are right. A
    temperature and bias on ll alone cannot tell the two apart; the interaction can."""
    from maporl.verifiers.calibration import fit

    g = torch.Generator().manual_seed(0)
    n = 400
    sure = torch.arange(n) < n // 2
    label = torch.where(sure, torch.arange(n) % 2, (torch.arange(n) // 2) % 2).float()
    agree = torch.where(sure, label.bool(), torch.arange(n) % 2 == 0)
    ll = torch.where(agree, -0.001 * torch.rand(n, generator=g), -5 - torch.rand(n, generator=g))
    conf = torch.where(sure, -0.01 * torch.rand(n, generator=g), -3 - torch.rand(n, generator=g))
    fitted = fit("answer_confidence", torch.stack([ll, conf], 1), label)
    p = fitted.probabilities(torch.tensor([[-0.0005, -0.005], [-5.5, -0.005], [-0.0005, -3.5], [-5.5, -3.5]]))
    assert p[0] > 0.9 and p[1] < 0.1 and abs(p[2] - 0.5) < 0.1 and abs(p[3] - 0.5) < 0.1, p
    platt = fit("platt", ll, label)
    assert platt.kind == "platt" and len(platt.weights) == 1
    assert platt.probabilities(torch.tensor([-0.0005])).item() < 0.8  # the unsure half drags agreement down


def test_a_verifier_directory_in_another_format_is_one_line_naming_its_file(tiny_model_dir, tmp_path):
    import shutil

    from maporl.errors import UsageError
    from maporl.verifiers import load_learned_verifier
    from maporl.verifiers.generative import META_FILE

    old = tmp_path / "old"
    shutil.copytree(tiny_model_dir, old)  # a causal LM directory, with a meta that has no calibration section
    meta = {"kind": "generative", "temperature": 2.0, "bias": 0.5, "max_new_tokens": 8, "samples": 1}
    (old / META_FILE).write_text(json.dumps(meta))
    with pytest.raises(UsageError, match=f"{META_FILE} is not a verifier this version of maporl reads"):
        load_learned_verifier(old)
