from django.urls import path

from api.views import ChannelMessageCreateApi

urlpatterns = [
    path("v1/channels/<str:channelId>/messages", ChannelMessageCreateApi.as_view(), name="channel-message-create"),
]
