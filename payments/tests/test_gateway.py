"""The fake gateway keeps its promises as a Stripe-like provider does: the same idempotency key
never moves money twice, a charge is refunded once whoever asks, and a 503 moves nothing."""

import pytest

from common.faults import faults_clear, faults_set
from payments.gateway import ChargeAlreadyRefunded, FakeGateway, GatewayUnavailable
from payments.models import GatewayCharge

pytestmark = pytest.mark.django_db


@pytest.fixture
def gateway():
    return FakeGateway()


@pytest.fixture
def no_faults_after():
    yield
    faults_clear()


def _charge(gateway: FakeGateway, key: str = "pay:saga-1:charge_payment", token: str = "tok_visa"):
    return gateway.charge(idempotency_key=key, amount=4500, currency="EUR", token=token)


def _charged_at_the_gateway() -> int:
    return sum(GatewayCharge.objects.filter(kind="charge", succeeded=True).values_list("amount", flat=True))


def _refunded_at_the_gateway() -> int:
    return sum(GatewayCharge.objects.filter(kind="refund", succeeded=True).values_list("amount", flat=True))


def test_a_charge_called_twice_with_the_same_key_charges_once(gateway):
    first = _charge(gateway)
    again = _charge(gateway)
    assert first.is_success and (first.amount, first.currency) == (4500, "EUR")
    assert again == first, "the same answer, the same transaction"
    assert _charged_at_the_gateway() == 4500


def test_charges_under_different_keys_are_different_charges(gateway):
    one = _charge(gateway, key="pay:saga-1:charge_payment")
    other = _charge(gateway, key="pay:saga-2:charge_payment")
    assert one.transaction_id != other.transaction_id
    assert _charged_at_the_gateway() == 9000


def test_a_declined_card_moves_no_money_and_says_why(gateway):
    declined = _charge(gateway, token="tok_chargeDeclined")
    assert (declined.is_success, declined.error) == (False, "card declined")
    assert _charged_at_the_gateway() == 0


def test_a_refund_called_twice_with_the_same_key_refunds_once(gateway):
    charge = _charge(gateway)
    refund = gateway.refund(
        idempotency_key="pay:refund-1", charge_transaction_id=charge.transaction_id, amount=4500, currency="EUR"
    )
    again = gateway.refund(
        idempotency_key="pay:refund-1", charge_transaction_id=charge.transaction_id, amount=4500, currency="EUR"
    )
    assert again == refund and refund.is_success and refund.kind == "refund"
    assert (_charged_at_the_gateway(), _refunded_at_the_gateway()) == (4500, 4500)


def test_a_charge_refunded_under_one_key_is_not_refunded_again_under_another(gateway):
    charge = _charge(gateway)
    first = gateway.refund(
        idempotency_key="pay:refund-1", charge_transaction_id=charge.transaction_id, amount=4500, currency="EUR"
    )
    with pytest.raises(ChargeAlreadyRefunded) as already:
        gateway.refund(
            idempotency_key="pay:refund-2", charge_transaction_id=charge.transaction_id, amount=4500, currency="EUR"
        )
    assert already.value.refund == first, "the refund that was made is named"
    assert _refunded_at_the_gateway() == 4500


def test_a_refund_of_a_charge_that_never_succeeded_is_refused(gateway):
    declined = _charge(gateway, token="tok_chargeDeclined")
    with pytest.raises(ValueError, match="no successful charge"):
        gateway.refund(
            idempotency_key="pay:refund-1", charge_transaction_id=declined.transaction_id, amount=4500, currency="EUR"
        )
    assert _refunded_at_the_gateway() == 0


def test_a_503_moves_no_money_and_the_retry_with_the_same_key_charges_once(gateway, no_faults_after):
    faults_set(gateway_transient=1.0)
    with pytest.raises(GatewayUnavailable):
        _charge(gateway)
    assert not GatewayCharge.objects.exists()
    faults_clear()
    _charge(gateway)
    _charge(gateway)
    assert _charged_at_the_gateway() == 4500


def test_a_refund_503_refunds_nothing(gateway, no_faults_after):
    charge = _charge(gateway)
    faults_set(gateway_refund_transient=1.0)
    with pytest.raises(GatewayUnavailable):
        gateway.refund(
            idempotency_key="pay:refund-1", charge_transaction_id=charge.transaction_id, amount=4500, currency="EUR"
        )
    assert _refunded_at_the_gateway() == 0
