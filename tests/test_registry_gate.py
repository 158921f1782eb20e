"""The champion gate, ``pipeline.evaluate.registry.decide``, for each outcome: no MLflow store.

The registry tests (test_registry.py) check the same gate end to end against a real store;
these pin every branch and its boundary in milliseconds.
"""

from __future__ import annotations

import pytest

from pipeline.core.params import RegisterParams
from pipeline.evaluate.registry import Decision, decide, version_description

GATE = RegisterParams(min_accuracy=0.70, min_improvement=0.01, allow_champion=True)


@pytest.mark.parametrize(
    ("accuracy", "champion", "champion_accuracy", "policy", "decision", "promote", "reason"),
    [
        # allow_champion false wins over everything, even a perfect score.
        (1.0, None, None, GATE.model_copy(update={"allow_champion": False}),
         "challenger_only", False, "register.allow_champion is false (no champion)"),
        # Below the floor, with or without a champion.
        (0.6999, None, None, GATE, "rejected", False, "below register.min_accuracy 0.7000"),
        (0.65, "3", 0.5, GATE, "rejected", False, "(champion v3)"),
        # The floor itself is enough for the first champion.
        (0.70, None, None, GATE, "promoted", True, "first version to reach"),
        # A champion without a usable accuracy tag is never replaced silently.
        (0.99, "2", None, GATE, "kept", False, "champion v2 has no valid test_accuracy tag"),
        # Must beat champion + min_improvement strictly.
        (0.82, "1", 0.80, GATE, "promoted", True, "beats the champion: test accuracy 0.8200"),
        (0.81, "1", 0.80, GATE, "kept", False, "does not beat the champion"),
        (0.805, "1", 0.80, GATE, "kept", False, "+ register.min_improvement 0.0100"),
    ],
)  # fmt: skip
def test_decide_each_outcome(
    accuracy: float,
    champion: str | None,
    champion_accuracy: float | None,
    policy: RegisterParams,
    decision: str,
    promote: bool,
    reason: str,
) -> None:
    result = decide(accuracy, champion, champion_accuracy, policy)
    assert (result.decision, result.promote) == (decision, promote)
    assert reason in result.reason


def test_version_description_says_what_data_accuracy_and_decision() -> None:
    tags = {
        "run_id": "abc123", "git.commit": "0123abc", "git.dirty": "false",
        "data.raw_md5": "r" * 32, "data.prepared_md5": "p" * 32, "test_accuracy": "0.8123",
        "dvc.experiment": "quick-brown-fox",
    }  # fmt: skip
    decision = Decision("kept", "does not beat the champion", False)
    text = version_description(tags, decision, "trained on 45,000 images, tested on 10,000")
    lines = text.split("\n\n")
    assert [line.split(":")[0] for line in lines] == [
        "**What**", "**Data**", "**Test accuracy**", "**Decision**"
    ]  # fmt: skip
    assert "`abc123` (DVC experiment `quick-brown-fox`), git commit `0123abc` clean" in lines[0]
    assert "trained on 45,000 images, tested on 10,000; raw archive md5 `rrrr" in lines[1]
    assert lines[2] == "**Test accuracy**: 0.8123."
    assert lines[3] == "**Decision**: kept: does not beat the champion."
