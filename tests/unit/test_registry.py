from sparkrec.registry import decide_promotion


def test_first_model_is_promoted() -> None:
    assert decide_promotion("1", 0.1, None, None, 0.0).promoted


def test_worse_beyond_tolerance_is_rejected_within_is_promoted() -> None:
    assert not decide_promotion("2", 0.10, "1", 0.12, 0.01).promoted
    assert decide_promotion("2", 0.115, "1", 0.12, 0.01).promoted
    assert decide_promotion("2", 0.13, "1", 0.12, 0.0).promoted
    rejected = decide_promotion("2", 0.10, "1", 0.12, 0.0)
    assert (rejected.champion_version, rejected.reason) == ("1", "0.1000 < 0.1200 - 0.0")
