"""Keep the gateway's copies of who may call in step with the database (after commit):

- cached API keys are forgotten when a key, its owner, or the owner's roles change;
- the deny-set (accounts.denylist) is republished when a user is deactivated or reactivated, or
  signed out everywhere;
- losing a role signs the user out everywhere: a signed token keeps the roles it was issued with,
  so tokens issued before the change are refused and the user signs in again to get the new ones.

Robust on-commit: with Redis down the change is saved and the admin answers; Django logs the
failed forget or publish. A stale API-key entry then lives out its TTL if that Redis comes back
with its data; a failed deny-set publish is owed (accounts.denylist.publish_owed): this process's
refresher publishes it again as soon as the cache answers, so a Redis that comes back with its old
data does not keep a deactivated user allowed.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.db.models.signals import m2m_changed, post_delete, post_save, pre_delete

from accounts.denylist import deny_set_publish
from accounts.models import ApiKey, User
from accounts.services import api_key_forget, user_sign_out_everywhere

__all__ = ["connect"]

# Saves that cannot change the deny-set: signing in records last_login, a password change its hash.
_IRRELEVANT_UPDATES = frozenset({"last_login", "password"})


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


def _publish() -> None:
    # On failure deny_set_publish leaves the publish owed (retried by DenySetHolder.refresh) and
    # raises, which the robust on-commit logs.
    deny_set_publish()


def _publish_deny_set_on_commit(**kwargs: Any) -> None:
    """One publish per transaction, however many users it changed."""
    if connection.in_atomic_block and any(item[1] is _publish for item in connection.run_on_commit):
        return
    transaction.on_commit(_publish, robust=True)


def _user_saved(sender: Any, instance: User, **kwargs: Any) -> None:
    update_fields = kwargs.get("update_fields")
    if update_fields is not None and set(update_fields) <= _IRRELEVANT_UPDATES:
        return
    _publish_deny_set_on_commit()


def _roles_removed(sender: Any, instance: Any, action: str, **kwargs: Any) -> None:
    if action not in ("post_remove", "pre_clear"):
        return
    if isinstance(instance, User):
        if action == "pre_clear" and not instance.groups.exists():
            return
        users = [instance]
    elif action == "post_remove":  # group.user_set.remove(...)
        users = list(User.objects.filter(pk__in=kwargs.get("pk_set") or ()))
    else:  # group.user_set.clear()
        users = list(instance.user_set.all())
    for user in users:
        user_sign_out_everywhere(user=user)


def _group_deleted(sender: Any, instance: Group, **kwargs: Any) -> None:
    # Deleting a role takes it from its members without an m2m signal.
    for user in instance.user_set.all():
        user_sign_out_everywhere(user=user)


def connect() -> None:
    post_save.connect(_forget_key, sender=ApiKey, dispatch_uid="apikey-forget-save")
    post_delete.connect(_forget_key, sender=ApiKey, dispatch_uid="apikey-forget-delete")
    post_save.connect(_forget_owner_keys, sender=User, dispatch_uid="apikey-forget-owner")
    m2m_changed.connect(
        _forget_owner_keys, sender=User.groups.through, dispatch_uid="apikey-forget-roles"
    )
    post_save.connect(_user_saved, sender=User, dispatch_uid="deny-set-user")
    post_delete.connect(_publish_deny_set_on_commit, sender=User, dispatch_uid="deny-set-delete")
    m2m_changed.connect(
        _roles_removed, sender=User.groups.through, dispatch_uid="deny-set-roles-removed"
    )
    pre_delete.connect(_group_deleted, sender=Group, dispatch_uid="deny-set-group-deleted")
