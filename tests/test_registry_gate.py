"""The champion gate, ``pipeline.evaluate.registry.decide``, for each outcome: no MLflow store.

The registry tests (test_registry.py) check the same gate end to end against a real store;
these pin every branch and its boundary in milliseconds.
"""

from __future__ import annotations

import pytest

from pipeline.core.params import RegisterParams
from pipeline.evaluate.registry import Decision, decide, headline, policy_tags, version_description

GATE = RegisterParams(min_accuracy=0.70, min_improvement=0.01, allow_champion=True)


@pytest.mark.parametrize(
    ("accuracy", "champion", "champion_accuracy", "policy", "decision", "promote", "reason"),
    [
        # allow_champion false wins over everything, even a perfect score.
        (1.0, None, None, GATE.model_copy(update={"allow_champion": False}),
         "challenger_only", False, "register.allow_champion is false (no champion)"),
        # Below the floor, with or without a champion, and even when no champion may be made.
        (0.50, None, None, GATE.model_copy(update={"allow_champion": False}),
         "rejected", False, "below register.min_accuracy 0.7000"),
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


@pytest.mark.parametrize(
    ("accuracy", "champion", "champion_accuracy", "policy", "line"),
    [
        (0.3076, "4", 0.1792, GATE.model_copy(update={"min_accuracy": 0.1}),
         "test accuracy 0.3076 — promoted: beat v4 (0.1792)"),
        (0.75, None, None, GATE, "test accuracy 0.7500 — promoted: first version to reach "
         "register.min_accuracy 0.7000"),
        (0.805, "1", 0.80, GATE,
         "test accuracy 0.8050 — made challenger: did not beat v1 (0.8000) by 0.0100"),
        (0.0975, "1", 0.80, GATE,
         "test accuracy 0.0975 — rejected, no alias: was below register.min_accuracy 0.7000"),
        (0.99, None, None, GATE.model_copy(update={"allow_champion": False}),
         "test accuracy 0.9900 — made challenger: register.allow_champion was false"),
    ],
)  # fmt: skip
def test_headline_says_accuracy_and_the_outcome_then_in_the_past_tense(
    accuracy: float,
    champion: str | None,
    champion_accuracy: float | None,
    policy: RegisterParams,
    line: str,
) -> None:
    # The past tense: the headline stays true after a later champion or challenger.
    assert headline(accuracy, decide(accuracy, champion, champion_accuracy, policy)) == line


def test_version_description_starts_with_the_headline_then_what_data_accuracy_decision() -> None:
    tags = {
        "run_id": "abc123", "git.commit": "0123abc", "git.dirty": "false",
        "data.raw_md5": "r" * 32, "data.prepared_md5": "p" * 32, "test_accuracy": "0.8123",
        "dvc.experiment": "quick-brown-fox", "dvc.baseline_rev": "b" * 40,
    }  # fmt: skip
    decision = Decision("kept", "does not beat the champion", False, "challenger: loses to v1")
    gate = policy_tags(GATE)
    text = version_description(
        tags, decision, "trained on 45,000 images, tested on 10,000", gate, "at registration on X"
    )
    lines = text.split("\n\n")
    assert lines[0] == "test accuracy 0.8123 — challenger: loses to v1"
    assert [line.split(":")[0] for line in lines[1:]] == [
        "**What**", "**Data**", "**Test accuracy**", "**Decision**", "**Input**", "**Gate**",
        "**DVC baseline**",
    ]  # fmt: skip
    assert "`abc123` (DVC experiment `quick-brown-fox`), git commit `0123abc` clean" in lines[1]
    assert "trained on 45,000 images, tested on 10,000; raw archive md5 `rrrr" in lines[2]
    assert lines[3] == "**Test accuracy**: 0.8123."
    # Dated: the champion it was compared with may be gone by the time someone reads it.
    assert lines[4] == "**Decision**: at registration on X, kept: does not beat the champion."
    assert lines[5].startswith("**Input**: raw images, N x 32 x 32 x 3 uint8 RGB pixels 0-255")
    assert lines[6] == (
        "**Gate**: `register.min_accuracy` 0.7, `register.min_improvement` 0.01, "
        "`register.allow_champion` true"
    )
    assert lines[7] == f"**DVC baseline**: `{'b' * 40}`."
