"""The list-wise losses: hand-computed values, limits, gradients, and real training steps on MiniLM."""

from __future__ import annotations

import math

import pytest
import torch

from rerankforge.losses import LOSS_NAMES, LOSSES, GradedBCELoss, LCELoss, WassersteinLoss, make_loss
from rerankforge.losses.wasserstein import gaussian_w2

QUERIES = ["how long does the battery last", "how do I reset my password", "where is the charging dock"]
DOCS = [
    [
        "A full charge lasts about nine hours.",
        "The cafeteria opens at 8 am.",
        "Expenses are due in 30 days.",
        "The sky is blue today.",
    ],
    [
        "Open Settings, then Security, to reset it.",
        "The battery lasts nine hours.",
        "Parking is free.",
        "The office closes on holidays.",
    ],
    [
        "The dock is in room 4 by the window.",
        "Printer toner is in the cupboard.",
        "Passwords need 12 characters.",
        "Book travel through the portal.",
    ],
]
GRADES = [[3.0, 0.0, 1.0, 0.0], [3.0, 1.0, 0.0, 0.0], [3.0, 0.0, 0.0, 1.0]]


@pytest.fixture(scope="module")
def cross_encoder(minilm_path: str):
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    return CrossEncoder(minilm_path, num_labels=1, max_length=128, device="cpu")


def _softmax(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


# ---------------------------------------------------------------- LCE


def test_lce_equals_hand_computed_cross_entropy(cross_encoder) -> None:
    loss = LCELoss(cross_encoder)
    scores = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    grades = torch.tensor([[3.0, 0.0, 1.0], [2.0, 0.0, 1.0]])  # positives: column 0 in both groups
    expected = (
        -math.log(math.exp(2.0) / (math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)))
        - math.log(math.exp(0.5) / (math.exp(0.5) + math.exp(1.5) + math.exp(0.0)))
    ) / 2
    assert float(loss.group_loss(scores, grades)) == pytest.approx(expected, rel=1e-6)


def test_lce_temperature_divides_the_scores(cross_encoder) -> None:
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    grades = torch.tensor([[3.0, 0.0, 1.0]])
    sharp = float(LCELoss(cross_encoder, temperature=0.5).group_loss(scores, grades))
    flat = float(LCELoss(cross_encoder, temperature=4.0).group_loss(scores, grades))
    expected_sharp = -math.log(math.exp(4.0) / (math.exp(4.0) + 1.0 + math.exp(-2.0)))
    expected_flat = -math.log(math.exp(0.5) / (math.exp(0.5) + 1.0 + math.exp(-0.25)))
    assert sharp == pytest.approx(expected_sharp, rel=1e-6)
    assert flat == pytest.approx(expected_flat, rel=1e-6)
    # the positive already scores highest: a sharper softmax puts more mass on it
    assert sharp < float(LCELoss(cross_encoder).group_loss(scores, grades)) < flat


def test_lce_target_is_the_highest_grade_even_when_not_first(cross_encoder) -> None:
    loss = LCELoss(cross_encoder)
    scores = torch.tensor([[2.0, 0.0, -1.0]])
    grades = torch.tensor([[0.0, 1.0, 3.0]])  # the positive is the last column, the worst-scored one
    denominator = math.exp(2.0) + math.exp(0.0) + math.exp(-1.0)
    assert float(loss.group_loss(scores, grades)) == pytest.approx(-math.log(math.exp(-1.0) / denominator), rel=1e-6)


# ---------------------------------------------------------------- Wasserstein


@pytest.mark.parametrize("batch, group", [(8, 4), (2, 4), (1, 5), (16, 8)])
def test_wasserstein_is_zero_when_prediction_equals_target(cross_encoder, batch: int, group: int) -> None:
    tau = 0.5
    loss = WassersteinLoss(cross_encoder, temperature=tau)
    generator = torch.Generator().manual_seed(batch * 100 + group)
    grades = torch.randint(0, 4, (batch, group), generator=generator).float()
    # P = softmax(scores / tau) == softmax(grades) = T
    assert abs(float(loss.group_loss(grades * tau, grades))) < 1e-10


def test_wasserstein_grows_as_prediction_parts_from_target(cross_encoder) -> None:
    tau = 0.5
    loss = WassersteinLoss(cross_encoder, temperature=tau)
    generator = torch.Generator().manual_seed(7)
    grades = torch.randint(0, 4, (8, 4), generator=generator).float()
    direction = torch.randn(8, 4, generator=generator)
    values = [float(loss.group_loss(grades * tau + a * direction, grades)) for a in (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)]
    assert values[0] < 1e-10
    assert all(later > earlier for earlier, later in zip(values, values[1:], strict=False)), values


def test_wasserstein_of_one_group_is_squared_l2_between_softmaxes(cross_encoder) -> None:
    tau = 2.0
    loss = WassersteinLoss(cross_encoder, temperature=tau)
    scores, grades = [1.0, -2.0, 0.5, 3.0], [3.0, 0.0, 1.0, 2.0]
    p = _softmax([s / tau for s in scores])
    t = _softmax(grades)
    expected = sum((a - b) ** 2 for a, b in zip(p, t, strict=True))  # one row: both covariances are zero
    got = float(loss.group_loss(torch.tensor([scores]), torch.tensor([grades])))
    assert expected > 0.01
    assert got == pytest.approx(expected, rel=1e-5)


def test_wasserstein_computes_in_float64(cross_encoder) -> None:
    p = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1).float()
    t = torch.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(2)), dim=1).float()
    assert gaussian_w2(p, t).dtype == torch.float64
    # prediction 1e-4 away from the target: float32 softmaxes would get the squared distance ~1e-3 wrong (relative)
    loss = WassersteinLoss(cross_encoder, temperature=1.0)
    grades = [3.0, 0.0, 1.0, 2.0]
    scores = torch.tensor([[3.0002, -0.0001, 0.9998, 2.0001]])
    expected = sum((a - b) ** 2 for a, b in zip(_softmax(scores[0].tolist()), _softmax(grades), strict=True))
    assert 1e-9 < expected < 1e-7
    assert float(loss.group_loss(scores, torch.tensor([grades]))) == pytest.approx(expected, rel=1e-5)


def _seeded(seed: int, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "scores, grades",
    [
        pytest.param(
            _seeded(3, 2, 6),
            torch.tensor([[3.0, 0.0, 1.0, 0.0, 2.0, 0.0], [0.0, 1.0, 3.0, 0.0, 0.0, 2.0]]),
            id="batch-smaller-than-group",
        ),
        pytest.param(torch.zeros(4, 4), torch.tensor([[3.0, 0.0, 1.0, 0.0]] * 4), id="identical-rows"),
        pytest.param(_seeded(4, 1, 4), torch.tensor([[3.0, 0.0, 1.0, 0.0]]), id="single-group"),
        pytest.param(
            torch.tensor([[3.0, 0.0, 1.0, 0.0]] * 3) * 0.5,
            torch.tensor([[3.0, 0.0, 1.0, 0.0]] * 3),
            id="identical-rows-at-target",
        ),
    ],
)
def test_wasserstein_gradients_are_finite_on_rank_deficient_batches(
    cross_encoder, scores: torch.Tensor, grades: torch.Tensor
) -> None:
    loss = WassersteinLoss(cross_encoder, temperature=0.5)
    scores = scores.clone().requires_grad_()
    value = loss.group_loss(scores, grades)
    value.backward()
    assert torch.isfinite(value)
    assert scores.grad is not None
    assert torch.isfinite(scores.grad).all(), scores.grad


def test_wasserstein_gradient_moves_prediction_towards_target(cross_encoder) -> None:
    loss = WassersteinLoss(cross_encoder, temperature=1.0)
    grades = torch.tensor([[3.0, 0.0, 1.0, 0.0], [0.0, 2.0, 0.0, 3.0], [1.0, 1.0, 3.0, 0.0]])
    scores = torch.zeros_like(grades, requires_grad=True)
    before = loss.group_loss(scores, grades)
    before.backward()
    with torch.no_grad():
        after = loss.group_loss(scores - 0.5 * scores.grad, grades)
    assert float(after) < float(before.detach())


# ---------------------------------------------------------------- graded BCE


def _bce(logit: float, target: float) -> float:
    p = 1 / (1 + math.exp(-logit))
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def test_graded_bce_is_the_mean_bce_against_grade_over_three(cross_encoder) -> None:
    loss = GradedBCELoss(cross_encoder)
    scores = torch.tensor([[2.0, -1.0, 0.5], [0.0, 1.0, -3.0]])
    grades = torch.tensor([[3.0, 0.0, 2.0], [1.0, 3.0, 0.0]])
    expected = (
        sum(
            _bce(s, g / 3)
            for row_s, row_g in zip(scores.tolist(), grades.tolist(), strict=True)
            for s, g in zip(row_s, row_g, strict=True)
        )
        / 6
    )
    assert float(loss.group_loss(scores, grades)) == pytest.approx(expected, rel=1e-6)


def test_graded_bce_is_smallest_at_the_grade_target(cross_encoder) -> None:
    loss = GradedBCELoss(cross_encoder, temperature=2.0)
    # a grade-2 pair: the loss is lowest where sigmoid(s / tau) == 2/3, i.e. s = tau * logit(2/3)
    best = 2.0 * math.log(2.0)
    values = {s: float(loss.group_loss(torch.tensor([[s]]), torch.tensor([[2.0]]))) for s in (best - 1, best, best + 1)}
    assert values[best] < values[best - 1] and values[best] < values[best + 1]
    assert values[best] == pytest.approx(_bce(math.log(2.0), 2 / 3), rel=1e-6)


# ---------------------------------------------------------------- construction errors


def test_losses_are_registered_by_name(cross_encoder) -> None:
    # each name builds its own class, for this model (a literal beside LOSSES would only compare it with itself)
    for name, cls in (("lce", LCELoss), ("wasserstein", WassersteinLoss), ("bce", GradedBCELoss)):
        loss = make_loss(name, cross_encoder)
        assert type(loss) is cls and loss.model is cross_encoder
    assert set(LOSSES) | {"listnet", "lambda"} == set(LOSS_NAMES)
    from sentence_transformers.cross_encoder.losses import LambdaLoss, ListNetLoss

    assert isinstance(make_loss("listnet", cross_encoder), ListNetLoss)
    assert isinstance(make_loss("lambda", cross_encoder), LambdaLoss)
    assert make_loss("bce", cross_encoder, temperature=2.0).temperature == 2.0
    with pytest.raises(ValueError, match="Unknown loss 'margin'. Choose one of: lce, wasserstein, bce"):
        make_loss("margin", cross_encoder)


def test_every_loss_name_is_a_config_choice() -> None:
    from rerankforge.config import TrainConfig

    for name in LOSS_NAMES:
        assert TrainConfig(loss=name).loss == name
    with pytest.raises(ValueError, match="loss"):
        TrainConfig(loss="margin")


@pytest.mark.parametrize("loss_class", [LCELoss, WassersteinLoss, GradedBCELoss])
def test_non_positive_temperature_is_refused(cross_encoder, loss_class) -> None:
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        loss_class(cross_encoder, temperature=0)


def test_multi_label_cross_encoder_is_refused(minilm_path: str) -> None:
    from sentence_transformers import CrossEncoder

    two_labels = CrossEncoder(minilm_path, num_labels=2, max_length=32, device="cpu")
    with pytest.raises(ValueError, match="LCELoss needs a CrossEncoder with one output label"):
        LCELoss(two_labels)


# ---------------------------------------------------------------- real forward passes


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_real_forward_returns_a_finite_scalar_with_grad(cross_encoder, name: str) -> None:
    loss = make_loss(name, cross_encoder)
    labels = [torch.tensor(g) for g in GRADES]
    value = loss(inputs=[QUERIES, DOCS], labels=labels)
    assert value.dim() == 0
    assert torch.isfinite(value)
    assert value.requires_grad
    value.backward()
    grads = [p.grad for p in cross_encoder.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    cross_encoder.zero_grad()


def test_unequal_group_sizes_are_refused(cross_encoder) -> None:
    loss = LCELoss(cross_encoder)
    docs = [DOCS[0], DOCS[1][:3]]
    with pytest.raises(ValueError, match=r"LCELoss needs groups of equal size, got sizes \[3, 4\]"):
        loss(inputs=[QUERIES[:2], docs], labels=[torch.tensor(GRADES[0]), torch.tensor(GRADES[1][:3])])


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_a_few_adamw_steps_make_each_loss_fall(minilm_path: str, name: str) -> None:
    from sentence_transformers import CrossEncoder

    torch.manual_seed(0)
    model = CrossEncoder(minilm_path, num_labels=1, max_length=128, device="cpu")
    loss = make_loss(name, model)
    labels = [torch.tensor(g) for g in GRADES]
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model.train()
    values = []
    for _ in range(5):
        optimizer.zero_grad()
        value = loss(inputs=[QUERIES, DOCS], labels=labels)
        value.backward()
        optimizer.step()
        values.append(float(value.detach()))
    with torch.no_grad():
        final = float(loss(inputs=[QUERIES, DOCS], labels=labels))
    assert final < values[0] * 0.9, values + [final]
