"""Django's settings as the request path reads them: plain attributes, each read from Django once.

Every `settings.X` goes through Django's LazyObject.__getattribute__, Python code of ~0.4 µs; the
proxy reads about a dozen settings per request (bench --profile: ~2 % of the event loop). A
running gateway never changes its settings. Tests do, with override_settings (pytest-django's
`settings` fixture too), which sends `setting_changed`: that empties this view, so the next read
takes the new value from Django again.

`default_cache()` is the project's cache object in the same way: `django.core.cache.cache` looks
it up in asgiref's Local, which is per context, so every request's task built one of its own
(~40 µs); one object serves every task (LocMemCache locks its store, django-redis pools its
connections).
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.cache import BaseCache, caches
from django.core.signals import setting_changed
from django.dispatch import receiver

__all__ = ["default_cache", "hot_settings"]


class HotSettings:
    """`hot_settings.X` is `settings.X`, kept as an attribute of its own after the first read."""

    def __getattr__(self, name: str) -> Any:  # only for a name not read yet
        generation = _changes[0]
        value = getattr(settings, name)
        # Not kept when a change came in between (a test's server thread reading while the test
        # changes the setting): the old value would outlive the change.
        if generation == _changes[0]:
            self.__dict__[name] = value
        return value


hot_settings = HotSettings()
_changes = [0]
_cache: list[BaseCache] = []


def default_cache() -> BaseCache:
    """Django's default cache, one object for the process (until a test changes a setting)."""
    if not _cache:
        _cache.append(caches["default"])
    return _cache[0]


@receiver(setting_changed)
def _setting_changed(**_: Any) -> None:
    _changes[0] += 1
    hot_settings.__dict__.clear()
    _cache.clear()
