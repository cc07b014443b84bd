"""The admin's login form, under the same failed sign-in limit as /auth/token
(accounts.login_limits): without it the admin would be the one door with no limit at all."""

from __future__ import annotations

from typing import Any

from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError

from accounts.login_limits import login_failure_record, login_limit_check, login_username

__all__ = ["LimitedAdminAuthenticationForm"]


class LimitedAdminAuthenticationForm(AdminAuthenticationForm):
    """Refuses, with the admin's own error message, an attempt past a failure bound (the right
    password included), and counts each failed attempt."""

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "too_many_failures": ("Too many failed sign-ins. Try again in %(minutes)s minute(s)."),
        "limit_unavailable": "Sign-in is unavailable right now; try again shortly.",
    }

    def clean(self) -> dict[str, Any]:
        if self.request is None:  # the admin always passes it; without it nothing can count
            return super().clean()
        username = login_username(self.cleaned_data.get("username"))
        refusal = login_limit_check(request=self.request, username=username)
        if refusal is not None:
            if refusal.status == 429:
                raise ValidationError(
                    self.error_messages["too_many_failures"],
                    code="too_many_failures",
                    params={"minutes": max(1, -(-refusal.retry_after // 60))},
                )
            raise ValidationError(self.error_messages["limit_unavailable"], code="unavailable")
        try:
            return super().clean()
        except ValidationError as exc:
            if exc.code == "invalid_login":
                login_failure_record(request=self.request, username=username)
            raise
