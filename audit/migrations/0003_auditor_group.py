"""The Auditor group: staff users in it can read the audit trail and the configuration history in
the admin, and change nothing."""

from django.contrib.auth.management import create_permissions
from django.db import migrations

AUDITOR_GROUP = "Auditor"
AUDITOR_MODELS = (
    "auditentry",
    "historicalservice",
    "historicaltarget",
    "historicalroute",
    "historicalrolepolicy",
    "historicalratelimittier",
    "historicalroutetieroverride",
    "historicalapikey",
)


def create_auditor_group(apps, schema_editor):
    # Permissions are normally created after the whole migrate run; the group needs them now.
    audit_config = apps.get_app_config("audit")
    audit_config.models_module = True
    create_permissions(audit_config, apps=apps, verbosity=0)
    audit_config.models_module = None

    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    group, _ = Group.objects.get_or_create(name=AUDITOR_GROUP)
    codenames = [f"view_{model}" for model in AUDITOR_MODELS]
    group.permissions.add(
        *Permission.objects.filter(content_type__app_label="audit", codename__in=codenames)
    )


def delete_auditor_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=AUDITOR_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("audit", "0002_config_history"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(create_auditor_group, delete_auditor_group)]
