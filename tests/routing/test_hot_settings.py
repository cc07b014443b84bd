"""The request path's view of the settings follows every change a test (or override_settings)
makes, though it reads each setting from Django only once."""

from __future__ import annotations

from django.test import override_settings

from routing.hot_settings import hot_settings


def test_a_changed_setting_is_read_again_and_restored_after():
    before = hot_settings.PORTIER_MAX_BODY_BYTES

    with override_settings(PORTIER_MAX_BODY_BYTES=before + 1):
        during = hot_settings.PORTIER_MAX_BODY_BYTES
    after = hot_settings.PORTIER_MAX_BODY_BYTES

    assert (during, after) == (before + 1, before)


def test_the_pytest_settings_fixture_reaches_it_too(settings):
    hot_settings.PORTIER_TRUSTED_PROXIES  # noqa: B018  (read, so a stale copy could be kept)

    settings.PORTIER_TRUSTED_PROXIES = ["192.0.2.0/24"]

    seen = hot_settings.PORTIER_TRUSTED_PROXIES
    assert seen == ["192.0.2.0/24"]
