"""The promotion hook's checks, without a server: signature, window, replays, payload.

Deliveries are signed by MLflow's own signer (``mlflow.webhooks.delivery``), so a change of
MLflow's scheme fails here first. The end-to-end test with a real ``mlflow server`` is in
tests/test_promotion_hook_e2e.py.
"""

from __future__ import annotations

import json
import uuid

import pytest
from mlflow.webhooks.delivery import _generate_hmac_signature

from deploy.promotion_hook import (
    DELIVERY_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Refused,
    Verifier,
    signature,
)

SECRET = "planted-secret-0123456789"
NOW = 1_800_000_000


def delivery(
    alias: str = "champion", version: str = "3", secret: str = SECRET, stamp: int = NOW
) -> tuple[dict[str, str], bytes]:
    body = json.dumps({
        "entity": "model_version_alias", "action": "created", "timestamp": "t",
        "data": {"name": "cifar10-cnn", "alias": alias, "version": version},
    })  # fmt: skip
    delivery_id = str(uuid.uuid4())
    headers = {
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(stamp),
        SIGNATURE_HEADER: _generate_hmac_signature(secret, delivery_id, str(stamp), body),
    }
    return headers, body.encode()


def verifier() -> Verifier:
    return Verifier(SECRET, "cifar10-cnn")


def test_our_signature_is_mlflows() -> None:
    expected = _generate_hmac_signature(SECRET, "id", "123", '{"a": 1}')
    assert signature(SECRET, "id", "123", b'{"a": 1}') == expected


def test_an_authentic_champion_delivery_gives_its_version() -> None:
    headers, body = delivery()
    assert verifier().verify(headers, body, now=NOW + 5) == {
        "name": "cifar10-cnn", "alias": "champion", "version": "3"
    }  # fmt: skip


def test_another_alias_is_authentic_but_not_acted_on() -> None:
    assert verifier().verify(*delivery(alias="challenger"), now=NOW) == {}


@pytest.mark.parametrize(
    "forge",
    [
        lambda h, b: ({**h, SIGNATURE_HEADER: delivery(secret="x" * 20)[0][SIGNATURE_HEADER]}, b),
        lambda h, b: (h, b.replace(b'"3"', b'"4"')),  # the version changed in transit
        lambda h, b: ({**h, DELIVERY_ID_HEADER: "other"}, b),
        lambda h, b: ({k: v for k, v in h.items() if k != SIGNATURE_HEADER}, b),
        lambda h, b: ({**h, TIMESTAMP_HEADER: "soon"}, b),
    ],
)
def test_a_forged_or_altered_delivery_is_401(forge: object) -> None:
    headers, body = forge(*delivery())  # type: ignore[operator]
    with pytest.raises(Refused) as refused:
        verifier().verify(headers, body, now=NOW)
    assert refused.value.status == 401


@pytest.mark.parametrize("age", [301, -301, 10_000])
def test_a_stale_or_future_timestamp_is_401(age: int) -> None:
    with pytest.raises(Refused, match="window") as refused:
        verifier().verify(*delivery(), now=NOW + age)
    assert refused.value.status == 401


def test_the_same_delivery_twice_is_a_replay() -> None:
    check = verifier()
    headers, body = delivery()
    check.verify(headers, body, now=NOW)
    with pytest.raises(Refused, match="replay") as refused:
        check.verify(headers, body, now=NOW + 1)
    assert refused.value.status == 409
    # A new delivery of the same event (MLflow gives each its own id) is not a replay.
    assert check.verify(*delivery(), now=NOW + 2)["version"] == "3"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", "not an MLflow webhook payload"),
        (json.dumps({"entity": "registered_model", "action": "created", "data": {
            "name": "cifar10-cnn", "alias": "champion", "version": "1"}}).encode(),
         "expected 'model_version_alias.created'"),
        (json.dumps({"entity": "model_version_alias", "action": "created", "data": {
            "name": "cifar10-cnn", "alias": "champion", "version": "1; rm -rf /"}}).encode(),
         "not a number"),
    ],
)  # fmt: skip
def test_a_signed_payload_that_is_not_an_alias_event_is_400(body: bytes, reason: str) -> None:
    delivery_id = "d1"
    headers = {
        DELIVERY_ID_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(NOW),
        SIGNATURE_HEADER: signature(SECRET, delivery_id, str(NOW), body),
    }
    with pytest.raises(Refused, match=reason) as refused:
        verifier().verify(headers, body, now=NOW)
    assert refused.value.status == 400
