"""How the API scopes a client's Idempotency-Key to its caller (SPEC section 3), without I/O."""

from orchestrator.api import Principal


def test_a_key_is_stored_under_the_callers_name() -> None:
    assert Principal("billing", "client").scope("order-1") == "billing:order-1"


def test_the_anonymous_caller_of_auth_off_keeps_keys_as_sent() -> None:
    assert Principal("anonymous", "admin", authenticated=False).scope("order-1") == "order-1"


def test_no_name_and_key_can_spell_another_name_and_key() -> None:
    pairs = [("a:b", "c"), ("a", "b:c"), ("a%3Ab", "c"), ("a%", "3Ab:c"), ("anonymous", "k")]
    scoped = [Principal(name, "client").scope(key) for name, key in pairs]
    assert len(set(scoped)) == len(pairs), scoped
    assert Principal("anonymous", "client").scope("k") != Principal("anonymous", "admin", authenticated=False).scope(
        "k"
    )
