"""The registrar role: API keys or tokens of users in this group may register service instances
over /registry/ (PORTIER_REGISTRAR_ROLE names the group; this is its default name). It needs no
permission of the admin: it is a role the gateway checks, like any other group."""

from django.db import migrations

REGISTRAR_GROUP = "registrar"


def create_registrar_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.get_or_create(name=REGISTRAR_GROUP)


def delete_registrar_group(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=REGISTRAR_GROUP).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("routing", "0005_service_balancing_health_registry"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_registrar_group, delete_registrar_group)]
