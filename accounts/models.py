"""Portier's user model: a custom one from day one, so later fields need no migration gymnastics."""

from __future__ import annotations

from django.contrib.auth.models import AbstractUser


class User(AbstractUser):
    """A person who administers the gateway or calls it; roles are Django groups."""

    class Meta(AbstractUser.Meta):
        swappable = "AUTH_USER_MODEL"
