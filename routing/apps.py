from django.apps import AppConfig


class RoutingConfig(AppConfig):
    name = "routing"
    verbose_name = "Gateway routing"

    def ready(self) -> None:
        from routing import signals
        from routing.api.revisions import record_published
        from routing.config.publish import version_publishing

        signals.connect()
        version_publishing.connect(record_published, dispatch_uid="timeline-record")
