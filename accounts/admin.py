"""Users with their groups (roles), and API keys: the secret is shown once, at creation.

A user can be signed out everywhere (an action on the list, a button on the user's page): their
tokens issued until then stop working on every gateway within a second. The admin's login form
shares the failed sign-in limit of /auth/token (accounts.forms).

A user's page also shows their API keys and their failed sign-ins, with "Clear sign-in
lockout"; sections about other apps' objects (routing: the routes the user can reach) are added
through `user_page_sections`, since accounts imports no app above it. An API key's page has
"Revoke", behind a confirmation page."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from accounts.forms import LimitedAdminAuthenticationForm
from accounts.login_limits import login_lockout, login_lockout_clear
from accounts.models import ApiKey, User
from accounts.services import api_key_issue, api_key_revoke, user_sign_out_everywhere
from audit.admin import ConfigChangeAdmin

__all__ = ["ApiKeyAdmin", "PortierUserAdmin", "UserSection", "user_page_sections"]

admin.site.login_form = LimitedAdminAuthenticationForm

_SIGNED_OUT = "Signed out everywhere: tokens issued until now are refused within a second."
_KEY_REVOKED = "API key revoked: every gateway refuses it within a second."


@dataclass(frozen=True, slots=True)
class UserSection:
    """A read-only section of a user's page, rendered from `template` with `context`."""

    id: str  # the element id, stable for browser tests
    title: str
    template: str
    context: dict[str, Any] = field(default_factory=dict)


# Sections other apps add to a user's page (routing.admin_users: "Reachable routes"); each gets
# the request and the user, and returns None to show nothing (say, to a viewer without access).
user_page_sections: list[Callable[[HttpRequest, User], UserSection | None]] = []


@admin.register(User)
class PortierUserAdmin(UserAdmin):
    change_form_template = "admin/accounts/user/change_form.html"
    list_display = ("username", "email", "roles", "is_staff", "is_active", "last_login")
    list_filter = ("is_staff", "is_superuser", "is_active", "groups")
    readonly_fields = ("tokens_valid_after",)
    fieldsets = (
        *UserAdmin.fieldsets[:-1],
        ("Important dates", {"fields": ("last_login", "date_joined", "tokens_valid_after")}),
    )
    actions = ("deactivate", "sign_out_everywhere")

    def get_queryset(self, request: HttpRequest) -> QuerySet[User]:
        return super().get_queryset(request).prefetch_related("groups")

    def get_urls(self) -> list[URLPattern]:
        sign_out = path(
            "<int:pk>/sign-out-everywhere/",
            self.admin_site.admin_view(require_POST(self.sign_out_view)),
            name="accounts_user_sign_out_everywhere",
        )
        clear_lockout = path(
            "<int:pk>/clear-sign-in-lockout/",
            self.admin_site.admin_view(require_POST(self.clear_lockout_view)),
            name="accounts_user_clear_sign_in_lockout",
        )
        return [sign_out, clear_lockout, *super().get_urls()]

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        user = self.get_object(request, object_id)
        if user is not None and self.has_view_or_change_permission(request, user):
            extra_context = {**(extra_context or {}), **self._overview(request, user)}
        return super().change_view(request, object_id, form_url, extra_context)

    def _overview(self, request: HttpRequest, user: User) -> dict[str, Any]:
        """The read-only sections under the user's form: other apps' sections, the user's API
        keys (for a viewer who may see keys) and their failed sign-ins."""
        sections = [section(request, user) for section in user_page_sections]
        may_see_keys = request.user.has_perm("accounts.view_apikey")
        return {
            "user_sections": [s for s in sections if s is not None],
            "api_keys": user.api_keys.order_by("-created_at") if may_see_keys else None,
            "lockout": login_lockout(logins=[user.get_username(), user.email]),
            "may_clear_lockout": self.has_change_permission(request, user),
        }

    def clear_lockout_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The "Clear sign-in lockout" button: POST only, for who may change the user."""
        user = get_object_or_404(User, pk=pk)
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        try:
            login_lockout_clear(logins=[user.get_username(), user.email])
        except Exception as exc:  # the cache is down: say so rather than fail the page
            self.message_user(
                request, f"The lockout could not be cleared: {type(exc).__name__}.", messages.ERROR
            )
        else:
            self.message_user(
                request, "Sign-in lockout cleared: the user can sign in again from any address."
            )
        return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[pk]))

    @admin.display(description="roles")
    def roles(self, obj: User) -> str:
        return ", ".join(g.name for g in obj.groups.all()) or "-"

    def sign_out_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """The button on a user's page: POST only (a link could be followed by accident)."""
        user = get_object_or_404(User, pk=pk)
        if not self.has_change_permission(request, user):
            raise PermissionDenied
        user_sign_out_everywhere(user=user)
        self.message_user(request, _SIGNED_OUT)
        return HttpResponseRedirect(reverse("admin:accounts_user_change", args=[pk]))

    @admin.action(description="Sign selected users out everywhere", permissions=["change"])
    def sign_out_everywhere(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        with transaction.atomic():
            for user in queryset:
                user_sign_out_everywhere(user=user)
        self.message_user(request, _SIGNED_OUT)

    @admin.action(description="Deactivate selected users", permissions=["change"])
    def deactivate(self, request: HttpRequest, queryset: QuerySet[User]) -> None:
        with transaction.atomic():
            for user in queryset.filter(is_active=True):
                user.is_active = False
                user.save(update_fields=["is_active"])
        self.message_user(
            request,
            "Deactivated: their tokens and API keys are refused on every gateway within a second.",
        )


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "prefix",
        "owner",
        "created_at",
        "expires_at",
        "last_used_at",
        "revoked_at",
    )
    list_filter = ("revoked_at", "expires_at")
    search_fields = ("name", "prefix", "owner__username", "owner__email")
    list_select_related = ("owner",)
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    autocomplete_fields = ("owner",)
    actions = ("revoke",)
    change_form_template = "admin/accounts/apikey/change_form.html"

    @staticmethod
    def may_choose_owner(request: HttpRequest) -> bool:
        """A key acts as its owner (proxied routes, /admin/api/): only who may change users may
        issue one for someone else. Anyone else issues keys for themselves."""
        user = request.user
        return bool(user.is_superuser or user.has_perm("accounts.change_user"))

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> list[str]:
        if obj is None:
            if not self.may_choose_owner(request):
                return ["name", "expires_at"]  # the owner is the requesting user (save_model)
            return ["owner", "name", "expires_at"]
        return ["name", "owner", "prefix", "created_at", "expires_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None) -> Any:
        return ("owner", *self.readonly_fields) if obj is not None else ()

    def save_model(self, request: HttpRequest, obj: ApiKey, form: ModelForm, change: bool) -> None:
        if change:
            super().save_model(request, obj, form, change)
            return
        if not self.may_choose_owner(request):
            obj.owner = request.user  # whatever was posted
        issued, key = api_key_issue(owner=obj.owner, name=obj.name, expires_at=obj.expires_at)
        obj.pk, obj.prefix = issued.pk, issued.prefix
        self.message_user(
            request,
            f"API key created. Copy it now, it will not be shown again: {key}",
            messages.WARNING,
        )

    def get_urls(self) -> list[URLPattern]:
        revoke = path(
            "<int:pk>/revoke/",
            self.admin_site.admin_view(self.revoke_view),
            name="accounts_apikey_revoke",
        )
        return [revoke, *super().get_urls()]

    def revoke_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        """GET: "Revoke this key?" with the key's owner and name; POST (the confirmation):
        revoke it. For who may change the key."""
        api_key = get_object_or_404(ApiKey.objects.select_related("owner"), pk=pk)
        if not self.has_change_permission(request, api_key):
            raise PermissionDenied
        change_url = reverse("admin:accounts_apikey_change", args=[pk])
        if api_key.revoked_at is not None:
            self.message_user(request, "This API key is already revoked.", messages.INFO)
            return HttpResponseRedirect(change_url)
        if request.method == "POST":
            api_key_revoke(api_key=api_key)
            self.message_user(request, _KEY_REVOKED, messages.SUCCESS)
            return HttpResponseRedirect(change_url)
        context = {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": "Revoke this API key?",
            "original": api_key,
            "change_url": change_url,
        }
        return TemplateResponse(request, "admin/accounts/apikey/revoke.html", context)

    @admin.action(description="Revoke selected API keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for api_key in queryset.filter(revoked_at__isnull=True):
            api_key_revoke(api_key=api_key)
        self.message_user(
            request, "The selected keys are revoked on every gateway within a second."
        )


@admin.register(ApiKey.history.model)
class ApiKeyChangeAdmin(ConfigChangeAdmin):
    search_fields = ("name", "prefix", "owner__username", "history_user__username")
