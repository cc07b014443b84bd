"""The configuration timeline in the admin (routing.api.revisions): every published version with
its author, time, source, comment and summary; a version's page with its diff against the
previous one or any other; and "Roll back to this version" behind a confirmation page.

The timeline is a read-only model admin, so the index links it like any other page and its list
pages, filters and search are the admin's own. Reading it needs what reading the configuration
document needs, rolling back what applying one needs (routing.api.permissions.may_use_document).
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse

from routing.api.document import document_dump
from routing.api.document_shape import DocumentInvalid
from routing.api.permissions import may_use_document
from routing.api.revision_diff import EMPTY_DOCUMENT, document_diff
from routing.api.revisions import revision_rollback
from routing.models import ConfigRevision

__all__ = ["ConfigRevisionAdmin"]

# Versions offered by the page's "compare with" selector (the newest; ?against= takes any).
COMPARE_CHOICES = 200


@admin.register(ConfigRevision)
class ConfigRevisionAdmin(admin.ModelAdmin):
    list_display = ("version", "created_at", "author", "source", "comment", "summary")
    list_display_links = ("version",)
    list_filter = ("source",)
    search_fields = ("comment", "summary", "author_name")
    list_select_related = False
    list_per_page = 50
    ordering = ("-number",)

    # --- Read only, for those who may read the whole configuration -------------------------

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return may_use_document(request.user, write=False)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return self.has_view_permission(request) or super().has_module_permission(request)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def may_roll_back(self, request: HttpRequest) -> bool:
        return may_use_document(request.user, write=True)

    def get_queryset(self, request: HttpRequest) -> Any:
        return super().get_queryset(request).defer("document")

    @admin.display(description="version", ordering="number")
    def version(self, revision: ConfigRevision) -> str:
        return f"v{revision.number}"

    @admin.display(description="author", ordering="author_name")
    def author(self, revision: ConfigRevision) -> str:
        return revision.author_name or "-"

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        return super().changelist_view(
            request, {"title": "Configuration timeline", **(extra_context or {})}
        )

    # --- One version, its diff, and the rollback ---------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        rollback = path(
            "<int:number>/rollback/",
            self.admin_site.admin_view(self.rollback_view),
            name="routing_configrevision_rollback",
        )
        comment = path(
            "<int:number>/comment/",
            self.admin_site.admin_view(self.comment_view),
            name="routing_configrevision_comment",
        )
        return [rollback, comment, *super().get_urls()]

    def may_comment(self, request: HttpRequest, revision: ConfigRevision) -> bool:
        """A version's author may say why afterwards (an admin save has no comment box); so may
        whoever may roll back. The configuration itself is not touched."""
        user = request.user
        return self.may_roll_back(request) or (
            revision.author_id is not None and revision.author_id == user.pk
        )

    def comment_view(self, request: HttpRequest, number: int) -> HttpResponse:
        """POST: set the version's comment (at most 2,000 characters), back to its page."""
        revision = self._revision(request, number)
        if request.method != "POST" or not self.may_comment(request, revision):
            raise PermissionDenied
        revision.comment = request.POST.get("comment", "").strip()[:2000]
        revision.save(update_fields=["comment"])
        self.message_user(request, f"The comment of v{revision.number} is saved.")
        return HttpResponseRedirect(
            reverse("admin:routing_configrevision_change", args=[revision.number])
        )

    def _revision(self, request: HttpRequest, number: Any) -> ConfigRevision:
        if not self.has_view_permission(request):
            raise PermissionDenied
        revision = (
            ConfigRevision.objects.filter(pk=number).first() if str(number).isdigit() else None
        )
        if revision is None:
            raise Http404(f"No configuration version {number}.")
        return revision

    def _context(
        self, request: HttpRequest, revision: ConfigRevision, title: str
    ) -> dict[str, Any]:
        latest = ConfigRevision.objects.order_by("-number").values_list("number", flat=True)
        return {
            **self.admin_site.each_context(request),
            "opts": self.opts,
            "title": title,
            "revision": revision,
            "is_current": revision.number == latest.first(),
            "may_roll_back": self.may_roll_back(request),
            "may_comment": self.may_comment(request, revision),
        }

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        """A version's page: who, when, why, its diff against the previous version (or the one
        chosen in "compare with"), and its document."""
        revision = self._revision(request, object_id)
        raw = request.GET.get("against", "")
        if raw:
            base = ConfigRevision.objects.filter(pk=raw).first() if raw.isdigit() else None
            if base is None:
                raise Http404(f"No configuration version {raw}.")
        else:
            base = (
                ConfigRevision.objects.filter(number__lt=revision.number)
                .order_by("-number")
                .first()
            )
        choices = (
            ConfigRevision.objects.exclude(pk=revision.pk)
            .order_by("-number")
            .values_list("number", flat=True)[:COMPARE_CHOICES]
        )
        context = self._context(request, revision, f"Configuration version {revision.number}")
        context |= {
            "against": base,
            "choices": list(choices),
            "changes": document_diff(base.document if base else EMPTY_DOCUMENT, revision.document),
            "document_text": document_dump(revision.document),
        }
        return TemplateResponse(request, "admin/routing/configrevision/version.html", context)

    def rollback_view(self, request: HttpRequest, number: int) -> HttpResponse:
        """GET: what rolling back would change, and a comment box; POST (the confirmation):
        apply the version's document as a new version."""
        revision = self._revision(request, number)
        if not self.may_roll_back(request):
            raise PermissionDenied
        errors: list[str] = []
        comment = ""
        if request.method == "POST":
            comment = request.POST.get("comment", "")[:2000]
            try:
                result = revision_rollback(revision, user=request.user, comment=comment)
            except DocumentInvalid as exc:
                errors = exc.errors
            else:
                if result.revision is None:
                    self.message_user(
                        request,
                        f"Version {revision.number} is the current configuration: nothing changed.",
                        messages.INFO,
                    )
                    return HttpResponseRedirect(reverse("admin:routing_configrevision_changelist"))
                new = result.revision
                self.message_user(
                    request,
                    f"Rolled back to version {revision.number}: published as version {new.number}.",
                    messages.SUCCESS,
                )
                url = reverse("admin:routing_configrevision_change", args=[new.number])
                return HttpResponseRedirect(url)
        current = ConfigRevision.objects.order_by("-number").first()
        context = self._context(request, revision, f"Roll back to version {revision.number}")
        context |= {
            "current": current,
            "changes": document_diff(
                current.document if current else EMPTY_DOCUMENT, revision.document
            ),
            "errors": errors,
            "comment": comment,
        }
        return TemplateResponse(
            request,
            "admin/routing/configrevision/rollback.html",
            context,
            status=400 if errors else 200,
        )
