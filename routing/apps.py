from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Gateway routing"

    def ready(self) -> None:
        from routing import signals

        signals.connect()
