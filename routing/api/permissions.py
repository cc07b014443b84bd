"""What a management API caller may do: Django's model permissions, as in the admin.

Reading needs the view permission too (DRF's default lets any authenticated user read), so an
auditor reads the audit trail and history and nothing else, and a plain user reads nothing.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission, DjangoModelPermissions
from rest_framework.request import Request

from routing.models import RateLimitTier, RolePolicy, Route, RouteTierOverride, Service, Target

__all__ = ["ConfigDocumentPermission", "IsStaff", "ModelPermissions", "may_use_document"]

_VIEW = ["%(app_label)s.view_%(model_name)s"]


class ModelPermissions(DjangoModelPermissions):
    """Django's add/change/delete permissions for writes, and the view permission for reads."""

    perms_map = {
        "GET": _VIEW,
        "HEAD": _VIEW,
        "OPTIONS": _VIEW,
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }


# Every model the declarative document describes.
DOCUMENT_MODELS = (Service, Target, Route, RolePolicy, RateLimitTier, RouteTierOverride)


def may_use_document(user: Any, *, write: bool) -> bool:
    """Whether `user` may read (or, with `write`, apply) the whole configuration document, and
    so its versions (and roll back to one): the view permission on every model it describes;
    to apply, the add, change and delete permissions on all of them."""
    if not user or not user.is_authenticated:
        return False
    actions = ("add", "change", "delete") if write else ("view",)
    # The defaults are one row, never added or deleted: viewing or changing it is enough.
    defaults = "routing.change_gatewaydefaults" if write else "routing.view_gatewaydefaults"
    return bool(
        user.has_perms(
            [
                *(
                    f"{model._meta.app_label}.{action}_{model._meta.model_name}"
                    for model in DOCUMENT_MODELS
                    for action in actions
                ),
                defaults,
            ]
        )
    )


class ConfigDocumentPermission(BasePermission):
    """The whole document (and its versions): reading needs may_use_document's view
    permissions, any other method its apply permissions."""

    def has_permission(self, request: Request, view: Any) -> bool:
        write = request.method not in {"GET", "HEAD", "OPTIONS"}
        return may_use_document(request.user, write=write)


class IsStaff(BasePermission):
    """The schema and docs of an admin API are for staff (admins and auditors), not public."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)
