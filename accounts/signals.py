"""Forget cached API keys when a key, its owner, or the owner's roles change (after commit).

Robust on-commit: with Redis down the change is saved and the admin answers; Django logs the
failed forget. The stale entry then lives out its TTL if that Redis comes back with its data.
"""

from __future__ import annotations

from typing import Any

from django.db import transaction
from django.db.models.signals import m2m_changed, post_delete, post_save

from accounts.models import ApiKey, User
from accounts.services import api_key_forget

__all__ = ["connect"]


def _forget_key(sender: Any, instance: ApiKey, **kwargs: Any) -> None:
    prefix = instance.prefix
    transaction.on_commit(lambda: api_key_forget(prefix), robust=True)


def _forget_owner_keys(sender: Any, instance: Any, **kwargs: Any) -> None:
    if not isinstance(instance, User):  # group.user_set changes arrive with a Group instance
        users = list(User.objects.filter(pk__in=kwargs.get("pk_set") or ()))
    else:
        users = [instance]
    prefixes = list(ApiKey.objects.filter(owner__in=users).values_list("prefix", flat=True))

    def forget() -> None:
        for prefix in prefixes:
            api_key_forget(prefix)

    transaction.on_commit(forget, robust=True)


def connect() -> None:
    post_save.connect(_forget_key, sender=ApiKey, dispatch_uid="apikey-forget-save")
    post_delete.connect(_forget_key, sender=ApiKey, dispatch_uid="apikey-forget-delete")
    post_save.connect(_forget_owner_keys, sender=User, dispatch_uid="apikey-forget-owner")
    m2m_changed.connect(
        _forget_owner_keys, sender=User.groups.through, dispatch_uid="apikey-forget-roles"
    )
