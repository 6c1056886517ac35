from django.apps import AppConfig


class ChannelsAppConfig(AppConfig):
    name = "channels_app"
    verbose_name = "Workspaces and channels"

    def ready(self):
        from config.checks import checks_register

        checks_register()
