"""What a management API caller may do: Django's model permissions, as in the admin.

Reading needs the view permission too (DRF's default lets any authenticated user read), so an
auditor reads the audit trail and history and nothing else, and a plain user reads nothing.
"""

from __future__ import annotations

from typing import Any

from rest_framework.permissions import BasePermission, DjangoModelPermissions
from rest_framework.request import Request

from routing.models import RateLimitTier, RolePolicy, Route, RouteTierOverride, Service, Target

__all__ = ["ConfigDocumentPermission", "IsStaff", "ModelPermissions"]

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


class ConfigDocumentPermission(BasePermission):
    """The whole document: reading it needs the view permission on every model it describes;
    applying it, the add, change and delete permissions on all of them."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        if not user or not user.is_authenticated:
            return False
        actions = (
            ("view",)
            if request.method in {"GET", "HEAD", "OPTIONS"}
            else (
                "add",
                "change",
                "delete",
            )
        )
        # The defaults are one row, never added or deleted: viewing or changing it is enough.
        defaults = (
            "routing.view_gatewaydefaults"
            if actions == ("view",)
            else ("routing.change_gatewaydefaults")
        )
        return user.has_perms(
            [
                *(
                    f"{model._meta.app_label}.{action}_{model._meta.model_name}"
                    for model in DOCUMENT_MODELS
                    for action in actions
                ),
                defaults,
            ]
        )


class IsStaff(BasePermission):
    """The schema and docs of an admin API are for staff (admins and auditors), not public."""

    def has_permission(self, request: Request, view: Any) -> bool:
        user = request.user
        return bool(user and user.is_authenticated and user.is_active and user.is_staff)
