from django.urls import path

from api.views import ChannelMessageCreateApi

urlpatterns = [
    path("v1/channels/<str:channel_id>/messages", ChannelMessageCreateApi.as_view(), name="channel-message-create"),
]
