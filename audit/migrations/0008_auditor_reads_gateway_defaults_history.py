"""Auditors read the gateway defaults' history too, like every other configuration model's."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

AUDITOR_GROUP = "Auditor"
CODENAME = "view_historicalgatewaydefaults"


def grant(apps, schema_editor):
    # Permissions are normally created after the whole migrate run; the group needs this now.
    audit_config = apps.get_app_config("audit")
    audit_config.models_module = True
    create_permissions(audit_config, apps=apps, verbosity=0)
    audit_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=AUDITOR_GROUP)
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="audit", codename=CODENAME)
    )


def revoke(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    for group in Group.objects.filter(name=AUDITOR_GROUP):
        group.permissions.remove(*Permission.objects.filter(codename=CODENAME))


class Migration(migrations.Migration):
    dependencies = [("audit", "0007_edge_options")]

    operations = [migrations.RunPython(grant, revoke)]
