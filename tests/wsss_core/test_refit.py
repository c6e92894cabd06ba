import pytest

from wsss_core.refit import RefitRule


def test_late_images_are_served_up_to_the_fraction_then_the_model_is_fitted_again():
    rule = RefitRule(late_fraction=0.1)
    assert not rule.needs_refit(fitted_on=30, served_late=3)
    assert rule.needs_refit(fitted_on=30, served_late=4)
    assert rule.needs_refit(fitted_on=0, served_late=0)  # nothing fitted yet
    assert RefitRule(late_fraction=0).needs_refit(fitted_on=100, served_late=1)


def test_a_negative_fraction_is_refused():
    with pytest.raises(ValueError, match="late_fraction"):
        RefitRule(late_fraction=-0.5)
