"""Users with their groups (roles), and API keys: the secret is shown once, at creation.

A user can be signed out everywhere (an action on the list, a button on the user's page): their
tokens issued until then stop working on every gateway within a second. The admin's login form
shares the failed sign-in limit of /auth/token (accounts.forms)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.contrib.auth.admin import UserAdmin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.urls import URLPattern, path, reverse
from django.views.decorators.http import require_POST

from accounts.forms import LimitedAdminAuthenticationForm
from accounts.models import ApiKey, User
from accounts.services import api_key_issue, api_key_revoke, user_sign_out_everywhere
from audit.admin import ConfigChangeAdmin

admin.site.login_form = LimitedAdminAuthenticationForm

_SIGNED_OUT = "Signed out everywhere: tokens issued until now are refused within a second."


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
        return [sign_out, *super().get_urls()]

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
